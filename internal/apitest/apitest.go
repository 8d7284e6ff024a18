// Package apitest checks real HTTP traffic against the OpenAPI document of the
// Lifeline API (api/openapi.yaml).
//
// Handler and client tests send their requests through Client (or a Transport):
// every response is validated against the document, and every request the server
// accepted is validated too. A mismatch is reported with testing.TB.Errorf, so a
// handler cannot drift from the contract without a test failing.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/lifeline-dev/lifeline/api"
)

// spec is the parsed document, loaded once per test binary. It is read-only after
// loading, so every Transport of every (parallel) test shares it.
var spec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

func load() (*openapi3.T, routers.Router, error) {
	spec.once.Do(func() {
		loader := openapi3.NewLoader()
		// The document is self-contained; never follow a reference off the machine.
		loader.IsExternalRefsAllowed = false
		doc, err := loader.LoadFromData(api.OpenAPI)
		if err != nil {
			spec.err = fmt.Errorf("apitest: load openapi.yaml: %w", err)
			return
		}
		if err := doc.Validate(loader.Context); err != nil {
			spec.err = fmt.Errorf("apitest: openapi.yaml is invalid: %w", err)
			return
		}
		// gorillamux rather than legacy: legacy matches the relative server URL "/"
		// against the whole request URL (scheme and host included) and finds nothing.
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			spec.err = fmt.Errorf("apitest: route openapi.yaml: %w", err)
			return
		}
		spec.doc, spec.router = doc, router
	})
	return spec.doc, spec.router, spec.err
}

// LoadSpec returns the parsed and validated OpenAPI document. It is loaded once and
// shared: callers must not modify it. A document that does not load or validate
// fails tb immediately.
func LoadSpec(tb testing.TB) *openapi3.T {
	tb.Helper()
	doc, _, err := load()
	if err != nil {
		tb.Fatal(err)
	}
	return doc
}

// Client returns an HTTP client whose every exchange is checked against the OpenAPI
// document by a Transport reporting to tb.
func Client(tb testing.TB) *http.Client {
	tb.Helper()
	LoadSpec(tb) // fail here, in the test goroutine, rather than on the first request
	return &http.Client{Transport: &Transport{T: tb}}
}

// Transport is an http.RoundTripper that checks each exchange against the OpenAPI
// document and reports mismatches with T.Errorf. The exchange itself is never
// altered: the caller gets the response, body intact, whatever the verdict.
//
// For each request it checks that:
//   - the path and method are documented (a 405 answer to an undocumented method is
//     accepted when its body is a method_not_allowed problem);
//   - the response matches the documented response for its status: status code,
//     required headers (ETag, Location), content type and body schema. An
//     undocumented status is an error, and so is a body where none is documented;
//   - when the server accepted the request (status < 400), the request itself matches
//     the document: parameters, headers, body, and an X-API-Key on secured operations.
//     Requests answered with 4xx/5xx are not checked, because tests send invalid
//     requests on purpose to provoke those answers.
//
// Request and response bodies are read into memory; responses of type
// text/event-stream and protocol switches (101) are passed through unread, with only
// their status and headers checked.
type Transport struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// T receives the mismatches. It is required.
	T testing.TB
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip sends req through Base and checks the exchange against the document.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	_, router, err := load()
	if err != nil {
		t.T.Error(err)
		return t.base().RoundTrip(req)
	}

	// Buffer the request body so it can be sent and then validated.
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		reqBody, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("apitest: read request body: %w", err)
		}
	}
	out := withBody(req, reqBody)

	route, pathParams, routeErr := router.FindRoute(withBody(req, nil))
	if routeErr != nil && !errors.Is(routeErr, routers.ErrMethodNotAllowed) {
		// Not documented at all (e.g. a WebSocket path): report it and do not touch
		// the response, which may be a stream.
		t.errorf(req, 0, "undocumented path (%v)", routeErr)
		return t.base().RoundTrip(out)
	}

	resp, err := t.base().RoundTrip(out)
	if err != nil {
		return nil, err
	}
	if streaming(resp) {
		t.check(req, reqBody, resp, nil, route, pathParams, routeErr, false)
		return resp, nil
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("apitest: read response body: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	t.check(req, reqBody, resp, respBody, route, pathParams, routeErr, true)
	return resp, nil
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) errorf(req *http.Request, status int, format string, args ...any) {
	what := fmt.Sprintf(format, args...)
	if status == 0 {
		t.T.Errorf("apitest: %s %s: %s", req.Method, req.URL.RequestURI(), what)
		return
	}
	t.T.Errorf("apitest: %s %s → %d: %s", req.Method, req.URL.RequestURI(), status, what)
}

// check validates one exchange. respBody is nil when the body was not read.
func (t *Transport) check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte,
	route *routers.Route, pathParams map[string]string, routeErr error, bodyRead bool) {
	// Validation does no I/O; it must not be cut short by the caller's deadline.
	ctx := context.WithoutCancel(req.Context())
	status := resp.StatusCode

	if routeErr != nil { // method not allowed on a documented path
		if status != http.StatusMethodNotAllowed {
			t.errorf(req, status, "undocumented method for this path (the document allows only a 405 answer)")
			return
		}
		if bodyRead {
			if err := checkMethodNotAllowed(resp, respBody); err != nil {
				t.errorf(req, status, "405 response does not match openapi.yaml: %v", err)
			}
		}
		return
	}

	opts := &openapi3filter.Options{
		AuthenticationFunc:    requireKey,
		IncludeResponseStatus: true,
		MultiError:            true,
		SkipSettingDefaults:   true,
		ExcludeResponseBody:   !bodyRead,
	}
	opts.WithCustomSchemaErrorFunc(schemaError)
	input := &openapi3filter.RequestValidationInput{
		Request:    withBody(req, reqBody),
		PathParams: pathParams,
		Route:      route,
		Options:    opts,
	}

	if status < 400 {
		if err := openapi3filter.ValidateRequest(ctx, input); err != nil {
			t.errorf(req, status, "the server accepted a request that does not match openapi.yaml: %v", err)
		}
		input.Request = withBody(req, reqBody) // validation consumed the body
	}

	rin := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 status,
		Header:                 resp.Header,
		Options:                opts,
	}
	rin.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(ctx, rin); err != nil {
		t.errorf(req, status, "response does not match openapi.yaml: %v", err)
		return
	}
	documented := route.Operation.Responses.Status(status)
	if documented == nil || documented.Value == nil {
		return
	}
	content := documented.Value.Content
	switch {
	case bodyRead && len(respBody) > 0 && len(content) == 0:
		t.errorf(req, status, "response has a body (%d bytes) but openapi.yaml documents none", len(respBody))
	case !bodyRead && status != http.StatusSwitchingProtocols && len(content) > 0:
		// ValidateResponse skipped the body, and with it the content type check.
		if ct := resp.Header.Get("Content-Type"); content.Get(ct) == nil {
			t.errorf(req, status, "response content type %q is not documented", ct)
		}
	}
}

// schemaError keeps schema errors to one line: where, what, and the offending value.
// kin-openapi's default message appends the whole schema, which buries the reason.
func schemaError(err *openapi3.SchemaError) string {
	msg := err.Reason
	if err.Origin != nil {
		msg = err.Origin.Error()
	}
	if msg == "" {
		msg = fmt.Sprintf("does not match %q", err.SchemaField)
	}
	// Errors of the JSON Schema 2020-12 validator name their location already.
	if p := err.JSONPointer(); len(p) > 0 && !strings.HasPrefix(msg, "at '") {
		msg = fmt.Sprintf("at %q: %s", "/"+strings.Join(p, "/"), msg)
	}
	// A nested schema error has already shown its value.
	var inner *openapi3.SchemaError
	if errors.As(err.Origin, &inner) {
		return msg
	}
	if v, jerr := json.Marshal(err.Value); jerr == nil {
		if len(v) > 200 {
			v = append(v[:200:200], "…"...)
		}
		msg += " (value: " + string(v) + ")"
	}
	return msg
}

// requireKey is the AuthenticationFunc used on accepted requests: a secured
// operation that succeeded without an X-API-Key means authentication was skipped.
// The key's validity is the server's business, not the document's.
func requireKey(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s := in.SecurityScheme
	if s == nil || s.Type != "apiKey" || s.In != "header" {
		return nil
	}
	if in.RequestValidationInput.Request.Header.Get(s.Name) == "" {
		return fmt.Errorf("missing %s header on a secured operation", s.Name)
	}
	return nil
}

// checkMethodNotAllowed validates a 405 answer against the MethodNotAllowed response
// of the document, which no operation lists because it belongs to no operation.
func checkMethodNotAllowed(resp *http.Response, body []byte) error {
	doc, _, err := load()
	if err != nil {
		return err
	}
	ref := doc.Components.Responses["MethodNotAllowed"]
	if ref == nil || ref.Value == nil {
		return errors.New("openapi.yaml has no components.responses.MethodNotAllowed")
	}
	ct := resp.Header.Get("Content-Type")
	mt := ref.Value.Content.Get(ct)
	if mt == nil || mt.Schema == nil {
		return fmt.Errorf("content type %q is not documented", ct)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	var opts []openapi3.SchemaValidationOption
	if doc.IsOpenAPI31OrLater() {
		opts = append(opts, openapi3.EnableJSONSchema2020())
	}
	return mt.Schema.Value.VisitJSON(v, append(opts, openapi3.VisitAsResponse(), openapi3.MultiErrors())...)
}

// streaming reports whether resp must be passed on unread.
func streaming(resp *http.Response) bool {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return true
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

// withBody returns a shallow copy of req that reads body and can be replayed. An
// empty body is sent as http.NoBody, so that it is not mistaken for one of unknown
// length.
func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	switch {
	case len(body) > 0:
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		r.ContentLength = int64(len(body))
	case req.Body == nil:
		r.Body, r.GetBody = nil, nil
	default:
		r.Body = http.NoBody
		r.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		r.ContentLength = 0
	}
	return r
}

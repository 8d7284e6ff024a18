package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/lifeline-dev/lifeline"
)

// Problem is an RFC 9457 problem details body with Lifeline's stable code member.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Code     string `json:"code"`
	Instance string `json:"instance,omitempty"`
	// Allowed names the statuses that would have been accepted, on invalid-transition
	// conflicts (possibly none).
	Allowed []string `json:"allowed,omitempty"`
}

// problemBody is Problem as written: allowed is present, even empty, whenever the error
// carries it.
type problemBody struct {
	Problem
	Allowed *[]string `json:"allowed,omitempty"`
}

// problem writes err as application/problem+json, logging internal errors.
func (s *Server) problem(w http.ResponseWriter, r *http.Request, err error) {
	if lifeline.ErrorCode(err) == lifeline.EInternal {
		s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	WriteProblem(w, r, err)
}

// WriteProblem writes err as RFC 9457 application/problem+json with Lifeline's code
// member. Errors that are not *lifeline.Error are shown as a generic internal error
// (the caller logs them).
func WriteProblem(w http.ResponseWriter, r *http.Request, err error) {
	code := lifeline.ErrorCode(err)
	status := lifeline.HTTPStatus(code)
	p := Problem{
		Type:     "https://lifeline.dev/problems/" + code,
		Title:    http.StatusText(status),
		Status:   status,
		Detail:   lifeline.ErrorMessage(err),
		Code:     code,
		Instance: r.URL.Path,
	}
	body := problemBody{Problem: p}
	var le *lifeline.Error
	var out any = body
	if errors.As(err, &le) {
		if le.Allowed != nil {
			body.Allowed = &le.Allowed
			out = body
		}
		if len(le.Extra) > 0 {
			out = withExtra(body, le.Extra)
		}
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(out)
}

// withExtra adds extension members to a problem body; they never replace the standard
// members.
func withExtra(body problemBody, extra map[string]any) map[string]any {
	b, _ := json.Marshal(body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for k, v := range extra {
		if _, taken := m[k]; !taken {
			m[k] = v
		}
	}
	return m
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads one JSON value from the capped body into v, rejecting unknown fields and
// trailing data.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	return DecodeJSON(w, r, v, s.cfg.MaxBodyBytes)
}

// DecodeJSON reads exactly one JSON value of at most max bytes from the request body
// into v, rejecting unknown fields. Errors are *lifeline.Error (invalid,
// payload_too_large) with a message for the client.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any, max int64) error {
	body := http.MaxBytesReader(w, r.Body, max)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err)
		}
		return lifeline.Errorf(lifeline.EInvalid, "request body must hold exactly one JSON value")
	}
	return nil
}

func decodeError(err error) error {
	var mbe *http.MaxBytesError
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return lifeline.Errorf(lifeline.EPayloadTooLarge, "request body exceeds %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return lifeline.Errorf(lifeline.EInvalid, "request body is empty; a JSON object is required")
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return lifeline.Errorf(lifeline.EInvalid, "request body is not valid JSON: %v", err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return lifeline.Errorf(lifeline.EInvalid, "%s must be %s", field, jsonKind(typ.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return lifeline.Errorf(lifeline.EInvalid, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	// Other decoding failures come from field types' own parsers (timestamps).
	return lifeline.Errorf(lifeline.EInvalid, "invalid request body: %v", err)
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "int32", "uint", "uint64":
		return "an integer"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return "of another type"
}

// parseIfMatch reads If-Match: "14", 14, W/"14" or * (any version: -1).
func parseIfMatch(r *http.Request) (int64, error) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == "" {
		return 0, lifeline.Errorf(lifeline.EPreconditionRequired, "If-Match with the agent's version (its ETag) is required")
	}
	if v == "*" {
		return -1, nil
	}
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, lifeline.Errorf(lifeline.EInvalid, "If-Match must be a version such as \"14\"")
	}
	return n, nil
}

func setETag(w http.ResponseWriter, version int64) {
	w.Header().Set("ETag", `"`+strconv.FormatInt(version, 10)+`"`)
}

// splitList splits a comma-separated query value, dropping empty items.
func splitList(v string) []string {
	if v == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// queryInt parses an optional integer query parameter within [min, max].
func queryInt(r *http.Request, name string, min, max int64) (int64, bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		return 0, false, lifeline.Errorf(lifeline.EInvalid, "%s must be an integer from %d to %d", name, min, max)
	}
	return n, true, nil
}

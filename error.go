package lifeline

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes. They are stable: clients match on them, and every code maps to exactly
// one HTTP status (see HTTPStatus), so ErrorCode(err) means the same thing in process
// and across the wire.
const (
	ENotFound             = "not_found"
	EConflict             = "conflict"
	EGone                 = "gone"
	EPreconditionFailed   = "precondition_failed"
	EPreconditionRequired = "precondition_required"
	EInvalid              = "invalid"
	EUnauthorized         = "unauthorized"
	EForbidden            = "forbidden"
	EPayloadTooLarge      = "payload_too_large"
	EUnavailable          = "unavailable"
	EMethodNotAllowed     = "method_not_allowed"
	EInternal             = "internal"
	// EAgentDraining refuses new work to a draining agent (RFC-0016 §9.3).
	EAgentDraining = "agent_draining"
)

// Error is the one error type of the domain. Message is safe to show to clients;
// anything that is not an *Error is reported as "internal" and never shown.
type Error struct {
	// Code is one of the E* constants.
	Code string
	// Message is a human-readable explanation for the client.
	Message string
	// Allowed names the statuses or triggers that would have been accepted, for
	// conflicts caused by an invalid transition.
	Allowed []string
	// Extra holds extension members for the problem body (for example the holder of a
	// contested lease).
	Extra map[string]any
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("lifeline: %s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for nil and
// EInternal for any other error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the client-safe message of err: the message of an *Error, or a
// generic text for anything else.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

var codeStatus = map[string]int{
	ENotFound:             http.StatusNotFound,
	EConflict:             http.StatusConflict,
	EGone:                 http.StatusGone,
	EPreconditionFailed:   http.StatusPreconditionFailed,
	EPreconditionRequired: http.StatusPreconditionRequired,
	EInvalid:              http.StatusBadRequest,
	EUnauthorized:         http.StatusUnauthorized,
	EForbidden:            http.StatusForbidden,
	EPayloadTooLarge:      http.StatusRequestEntityTooLarge,
	EUnavailable:          http.StatusServiceUnavailable,
	EMethodNotAllowed:     http.StatusMethodNotAllowed,
	EAgentDraining:        http.StatusConflict,
	EInternal:             http.StatusInternalServerError,
}

// HTTPStatus returns the HTTP status code for an error code. Unknown codes are 500.
func HTTPStatus(code string) int {
	if s, ok := codeStatus[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// CodeForHTTPStatus is the inverse of HTTPStatus, used by clients to rebuild an error
// from a response that carried no code member.
func CodeForHTTPStatus(status int) string {
	if status == http.StatusConflict {
		return EConflict
	}
	for code, s := range codeStatus {
		if s == status {
			return code
		}
	}
	if status >= 500 {
		return EInternal
	}
	return EInvalid
}

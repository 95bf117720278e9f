package api

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
)

// Error reasons, each with its HTTP status.
const (
	ReasonInvalid       = "Invalid"       // 400: the request is malformed or fails validation
	ReasonUnauthorized  = "Unauthorized"  // 401: no identity (no or an unusable client certificate, a bad join token)
	ReasonForbidden     = "Forbidden"     // 403: the identity may not do this
	ReasonNotFound      = "NotFound"      // 404
	ReasonAlreadyExists = "AlreadyExists" // 409: a different object has that name
	ReasonConflict      = "Conflict"      // 409: the object is in use, overlaps, or changed under us
	ReasonExhausted     = "Exhausted"     // 409: an id or address space is full
	ReasonTooLarge      = "TooLarge"      // 413
	ReasonGone          = "Gone"          // 410: a watch revision was compacted
	ReasonInternal      = "Internal"      // 500
	ReasonUnavailable   = "Unavailable"   // 503: the store cannot be reached
)

var reasonStatus = map[string]int{
	ReasonInvalid:       http.StatusBadRequest,
	ReasonUnauthorized:  http.StatusUnauthorized,
	ReasonForbidden:     http.StatusForbidden,
	ReasonNotFound:      http.StatusNotFound,
	ReasonAlreadyExists: http.StatusConflict,
	ReasonConflict:      http.StatusConflict,
	ReasonExhausted:     http.StatusConflict,
	ReasonTooLarge:      http.StatusRequestEntityTooLarge,
	ReasonGone:          http.StatusGone,
	ReasonInternal:      http.StatusInternalServerError,
	ReasonUnavailable:   http.StatusServiceUnavailable,
}

// Error is the API's error: its JSON form is the body of every non-2xx
// response, as {"error": {...}}.
type Error struct {
	Status  int    `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// ErrorBody is the JSON envelope of an error response.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Errorf builds an *Error with the reason's status.
func Errorf(reason, format string, args ...any) *Error {
	st, ok := reasonStatus[reason]
	if !ok {
		st = http.StatusInternalServerError
	}
	return &Error{Status: st, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of the first *Error in err's chain, or "" if none.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// IsNotFound reports whether err is (or wraps) a NotFound error.
func IsNotFound(err error) bool { return ReasonOf(err) == ReasonNotFound }

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)
	addrNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$`)
)

// ValidateName checks an object name (network, host, tenant, segment,
// policy): lowercase DNS-label style, 1 to 63 characters.
func ValidateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return Errorf(ReasonInvalid, "invalid %s name %q: use 1-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit", kind, name)
	}
	return nil
}

// ValidateAddressName checks an address request name (the idempotency key,
// for example a container id and interface "3f2a...:eth0").
func ValidateAddressName(name string) error {
	if !addrNameRE.MatchString(name) {
		return Errorf(ReasonInvalid, "invalid address name %q: use 1-253 characters from A-Z a-z 0-9 . _ : -, starting with a letter or digit", name)
	}
	return nil
}

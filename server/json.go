package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/romana/romana/api"
)

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(api.ErrorBody{Error: api.Errorf(api.ReasonInternal, "encode response: %v", err)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers with err as an api.ErrorBody. Errors that are not
// *api.Error are internal: logged, and reported as 500.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = api.Errorf(api.ReasonInternal, "%s %s: %v", r.Method, r.URL.Path, err)
	} else if ae.Status >= 500 {
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "reason", ae.Reason, "err", ae.Message)
	}
	if c := callerOf(r); ae.Status == http.StatusForbidden && c.refusal == nil {
		// A refusal found below the handler (the store's own-host check):
		// name the identity and the rule, and keep it for the audit line.
		if !c.id.IsZero() && c.decision.Rule != "" {
			ae = api.Errorf(api.ReasonForbidden, "identity %s (rule %q): %s", c.id, c.decision.Rule, ae.Message)
		}
		c.refusal = ae
	}
	writeJSON(w, ae.Status, api.ErrorBody{Error: ae})
}

// decodeBody reads one JSON object into v: at most s.maxBody bytes, no
// unknown fields, nothing after it.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > s.maxBody {
		return api.Errorf(api.ReasonTooLarge, "request body is %d bytes; the limit is %d", r.ContentLength, s.maxBody)
	}
	body := http.MaxBytesReader(w, r.Body, s.maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return s.bodyError(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return s.bodyError(err)
		}
		return api.Errorf(api.ReasonInvalid, "request body has data after the JSON object")
	}
	return nil
}

func (s *Server) bodyError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return api.Errorf(api.ReasonTooLarge, "request body exceeds the limit of %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return api.Errorf(api.ReasonInvalid, "request body is empty: expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return api.Errorf(api.ReasonInvalid, "malformed JSON in request body: it ends in the middle of a value")
	case errors.As(err, &se):
		return api.Errorf(api.ReasonInvalid, "malformed JSON in request body at byte %d: %v", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		if te.Field == "" {
			return api.Errorf(api.ReasonInvalid, "request body: expected a JSON %s, got %s", jsonKind(te.Type.Kind().String()), te.Value)
		}
		return api.Errorf(api.ReasonInvalid, "request body: field %s: expected %s, got JSON %s", te.Field, jsonKind(te.Type.String()), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return api.Errorf(api.ReasonInvalid, "request body: unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return api.Errorf(api.ReasonInvalid, "invalid request body: %v", err)
}

func jsonKind(goType string) string {
	switch goType {
	case "struct":
		return "object"
	case "slice":
		return "array"
	}
	return goType
}

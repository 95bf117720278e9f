package server

import (
	"bytes"
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
// unknown fields, no key twice in an object, not null, nothing after it.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	return s.decodeBodyLimit(w, r, v, s.maxBody)
}

// decodeBodyLimit is decodeBody with a limit of its own, for the few
// routes whose objects may be larger (address sets).
func (s *Server) decodeBodyLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	if r.ContentLength > limit {
		return api.Errorf(api.ReasonTooLarge, "request body is %d bytes; the limit is %d", r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return s.bodyError(err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
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
	if string(bytes.TrimSpace(body)) == "null" {
		// Decoding null into a struct leaves it zero, without an error.
		return api.Errorf(api.ReasonInvalid, "request body is null: expected a JSON object")
	}
	return duplicateKeys(body)
}

// duplicateKeys fails when an object in body, which is one valid JSON
// value, has a key twice. encoding/json keeps the last value of a repeated
// key and matches keys to struct fields without regard to case, so keys
// are compared that way: {"ip":"192.0.2.1","IP":"127.0.0.1"} is refused
// rather than read differently by romanad and by whatever checked the
// request on its way.
func duplicateKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var value func() error
	value = func() error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				off := dec.InputOffset()
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := k.(string)
				folded := strings.ToLower(strings.ToUpper(key))
				if seen[folded] {
					return api.Errorf(api.ReasonInvalid, "request body: duplicate key %q in an object at byte %d (keys are compared without regard to case)", key, off)
				}
				seen[folded] = true
				if err := value(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // '}'
			return err
		case json.Delim('['):
			for dec.More() {
				if err := value(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ']'
			return err
		}
		return nil
	}
	if err := value(); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return ae
		}
		return api.Errorf(api.ReasonInvalid, "invalid request body: %v", err)
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

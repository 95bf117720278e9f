package server

import (
	"encoding/json"
	"testing"
)

// FuzzDuplicateKeys: for any valid JSON value v, duplicateKeys never
// panics; {"k":v} is refused exactly when v is; {"k":v,"K":v} always is.
func FuzzDuplicateKeys(f *testing.F) {
	for _, s := range []string{`1`, `"x"`, `null`, `[]`, `{}`, `{"a":1,"b":[{"c":2,"C":3}]}`, `[{"x":1},{"x":2}]`,
		`{"ip":"192.0.2.1","IP":"127.0.0.1"}`, `{"k":{"K":1}}`, `{"\u212a":1,"k":2}`, `{"ſ":1,"S":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		if !json.Valid(v) {
			return
		}
		inner := duplicateKeys(v)
		wrapped := duplicateKeys([]byte(`{"k":` + string(v) + `}`))
		if (inner == nil) != (wrapped == nil) {
			t.Fatalf("%s: alone %v, wrapped %v", v, inner, wrapped)
		}
		if duplicateKeys([]byte(`{"k":`+string(v)+`,"K":`+string(v)+`}`)) == nil {
			t.Fatalf("%s: a duplicate key around it was not found", v)
		}
	})
}

package cli

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	yaml3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"github.com/romana/romana/plan"
)

// decodeStrict decodes JSON or YAML into v, rejecting unknown fields. Its
// errors name the file and say what is wrong in the file's terms, with the
// line and column: an unknown field (and the closest known one), a value of
// the wrong kind, an address that does not parse. JSON is read as YAML (of
// which it is a subset), so both get the same positions.
func decodeStrict(name string, data []byte, v any) error {
	if name == "-" {
		name = "stdin"
	}
	var doc yaml3.Node
	if err := yaml3.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: not valid JSON or YAML: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind == yaml3.DocumentNode && len(doc.Content) == 1 {
		if err := checkNode(doc.Content[0], reflect.TypeOf(v).Elem(), ""); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	// The checks above follow the types' JSON field names; the decoding
	// itself is the JSON decoder's, as the API's.
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("%s: not valid JSON or YAML: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// nodeError is a problem at a node of the file.
func nodeError(n *yaml3.Node, path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	return fmt.Errorf("line %d, column %d: %s", n.Line, n.Column, msg)
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
)

// checkNode checks that n can decode into a value of type t: mappings for
// structs with known fields only, sequences for lists, scalars of the right
// kind, and text that types such as netip.Addr accept.
func checkNode(n *yaml3.Node, t reflect.Type, path string) error {
	for n.Kind == yaml3.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml3.ScalarNode && n.Tag == "!!null" {
		return nil // null leaves the zero value
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(textUnmarshaler) {
		if n.Kind != yaml3.ScalarNode {
			return nodeError(n, path, "want text, got %s", describe(n))
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			return nodeError(n, path, "%q: %s", n.Value, plan.AddrReason(err))
		}
		return nil
	}
	if pt.Implements(jsonUnmarshaler) || t.Kind() == reflect.Interface {
		return nil // the type decodes itself
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml3.MappingNode {
			return nodeError(n, path, "want a mapping of fields, got %s", describe(n))
		}
		fields := jsonFields(t)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				for name, ff := range fields { // encoding/json matches names case-insensitively
					if strings.EqualFold(name, k.Value) {
						f, ok = ff, true
						break
					}
				}
			}
			if !ok {
				return nodeError(k, "", "unknown field %q%s%s", k.Value, in(path), suggest(k.Value, fields))
			}
			if line, dup := seen[k.Value]; dup {
				return nodeError(k, "", "field %q given twice%s (also on line %d)", k.Value, in(path), line)
			}
			seen[k.Value] = k.Line
			if err := checkNode(val, f.Type, join(path, k.Value)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml3.MappingNode {
			return nodeError(n, path, "want a mapping, got %s", describe(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkNode(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return nil // []byte: base64 text
		}
		if n.Kind != yaml3.SequenceNode {
			return nodeError(n, path, "want a list, got %s", describe(n))
		}
		for i, e := range n.Content {
			if err := checkNode(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.String:
		if n.Kind != yaml3.ScalarNode || n.Tag == "!!int" || n.Tag == "!!float" || n.Tag == "!!bool" {
			hint := ""
			if n.Kind == yaml3.ScalarNode {
				hint = fmt.Sprintf(" (quote it: \"%s\")", n.Value)
			}
			return nodeError(n, path, "want text, got %s%s", describe(n), hint)
		}
	case reflect.Bool:
		if n.Kind != yaml3.ScalarNode || n.Tag != "!!bool" {
			return nodeError(n, path, "want true or false, got %s", describe(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		lo, hi := int64(math.MinInt64)>>(64-t.Bits()), int64(math.MaxInt64)>>(64-t.Bits())
		v, err := strconv.ParseInt(n.Value, 0, 64)
		if n.Kind != yaml3.ScalarNode || n.Tag != "!!int" || err != nil || v < lo || v > hi {
			if t.Bits() == 64 {
				return nodeError(n, path, "want a whole number, got %s", describe(n))
			}
			return nodeError(n, path, "want a whole number from %d to %d, got %s", lo, hi, describe(n))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		hi := uint64(math.MaxUint64) >> (64 - t.Bits())
		v, err := strconv.ParseUint(n.Value, 0, 64)
		if n.Kind != yaml3.ScalarNode || n.Tag != "!!int" || err != nil || v > hi {
			return nodeError(n, path, "want a whole number from 0 to %d, got %s", hi, describe(n))
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml3.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			return nodeError(n, path, "want a number, got %s", describe(n))
		}
	}
	return nil
}

// jsonFields maps the JSON names of t's fields (embedded structs' too) to
// their fields, as encoding/json sees them.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

// describe says what a node is, for "want X, got Y".
func describe(n *yaml3.Node) string {
	switch n.Kind {
	case yaml3.MappingNode:
		return "a mapping"
	case yaml3.SequenceNode:
		return "a list"
	}
	switch n.Tag {
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return n.Value
	}
	return strconv.Quote(n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

// suggest names the known field closest to an unknown one (at most two
// edits away, or one it abbreviates), else lists the known fields.
func suggest(name string, fields map[string]reflect.StructField) string {
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	slices.Sort(known)
	best, bestD := "", 3
	for _, k := range known {
		if len(name) >= 3 && strings.HasPrefix(strings.ToLower(k), strings.ToLower(name)) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (known fields: " + strings.Join(known, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

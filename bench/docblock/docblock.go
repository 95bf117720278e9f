// Package docblock is what the parts of make bench share to record their
// results: a JSON file of the results, and a generated block between two
// markers of docs/benchmarks.md, regenerated in place while the rest of
// the document is left as it is.
package docblock

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Splice replaces what lies between the markers begin and end in doc with
// block. The markers must each appear once, begin before end.
func Splice(doc, begin, end, block string) (string, error) {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < 0 || j < i || strings.Count(doc, begin) != 1 || strings.Count(doc, end) != 1 {
		return "", fmt.Errorf("want exactly one %q followed by one %q", begin, end)
	}
	return doc[:i+len(begin)] + "\n" + strings.Trim(block, "\n") + "\n" + doc[j:], nil
}

// Update splices block into the markdown file docPath; it leaves the file
// untouched when nothing changes.
func Update(docPath, begin, end, block string) error {
	b, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	out, err := Splice(string(b), begin, end, block)
	if err != nil {
		return fmt.Errorf("%s: %w", docPath, err)
	}
	if out == string(b) {
		return nil
	}
	return os.WriteFile(docPath, []byte(out), 0o644)
}

// WriteJSON writes v, indented, to path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ReadJSON reads path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

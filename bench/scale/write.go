package scale

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// JSONFile is the results file's name in the output directory.
const JSONFile = "scale.json"

// WriteJSON writes r as dir/scale.json.
func WriteJSON(dir string, r Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, JSONFile)
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// ReadJSON reads dir/scale.json.
func ReadJSON(dir string) (Results, error) {
	p := filepath.Join(dir, JSONFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return Results{}, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return Results{}, fmt.Errorf("read %s: %w", p, err)
	}
	return r, nil
}

// UpdateDoc regenerates the marked block of the markdown file docPath
// from r, embedding files of dir by their path relative to the doc.
func UpdateDoc(docPath, dir string, r Results) error {
	b, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(docPath), dir)
	if err != nil {
		return err
	}
	out, err := Splice(string(b), Render(r, filepath.ToSlash(rel)))
	if err != nil {
		return fmt.Errorf("%s: %w", docPath, err)
	}
	if out == string(b) {
		return nil
	}
	return os.WriteFile(docPath, []byte(out), 0o644)
}

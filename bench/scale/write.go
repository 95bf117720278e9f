package scale

import (
	"path/filepath"

	"github.com/romana/romana/bench/docblock"
)

// JSONFile is the results file's name in the output directory.
const JSONFile = "scale.json"

// WriteJSON writes r as dir/scale.json.
func WriteJSON(dir string, r Results) error {
	return docblock.WriteJSON(filepath.Join(dir, JSONFile), r)
}

// ReadJSON reads dir/scale.json.
func ReadJSON(dir string) (Results, error) {
	var r Results
	return r, docblock.ReadJSON(filepath.Join(dir, JSONFile), &r)
}

// UpdateDoc regenerates the marked block of the markdown file docPath
// from r, embedding files of dir by their path relative to the doc.
func UpdateDoc(docPath, dir string, r Results) error {
	rel, err := filepath.Rel(filepath.Dir(docPath), dir)
	if err != nil {
		return err
	}
	return docblock.Update(docPath, BeginMarker, EndMarker, Render(r, filepath.ToSlash(rel)))
}

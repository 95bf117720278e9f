// Package docs holds no code: its test checks promises the documentation
// makes about itself and the repository.
package docs

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReadmeGo: the README names the Go version go.mod requires, and warns
// that the first run takes minutes.
func TestReadmeGo(t *testing.T) {
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(read(t, "../go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	readme := read(t, "../README.md")
	if !strings.Contains(readme, "Go "+m[1]+" or newer") {
		t.Errorf("README.md does not say it needs Go %s or newer (go.mod)", m[1])
	}
	if !strings.Contains(readme, "first run therefore takes minutes") {
		t.Error("README.md does not say that the first run takes minutes")
	}
}

// TestArchitectureNotBuiltYet: architecture.md lists what is not built in
// the section its introduction promises.
func TestArchitectureNotBuiltYet(t *testing.T) {
	a := read(t, "architecture.md")
	if !strings.Contains(a, `listed under "Not built yet"`) {
		return // the promise is gone; nothing to keep
	}
	_, section, ok := strings.Cut(a, "\n## Not built yet\n")
	if !ok {
		t.Fatal(`architecture.md promises a "Not built yet" section and has none`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	for _, want := range []string{"Kubernetes", "IPv6"} {
		if !strings.Contains(section, want) {
			t.Errorf("Not built yet does not mention %s", want)
		}
	}
}

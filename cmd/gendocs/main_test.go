package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckedIn: docs/cli and docs/man are what gendocs makes of the
// commands now; after changing a command's help, run `make docs`.
func TestCheckedIn(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"cli", "man"} {
		want, got := files(t, filepath.Join("..", "..", "docs", sub)), files(t, filepath.Join(dir, sub))
		for name, g := range got {
			w, ok := want[name]
			switch {
			case !ok:
				t.Errorf("docs/%s/%s is missing: run make docs", sub, name)
			case !bytes.Equal(w, g):
				t.Errorf("docs/%s/%s is stale: run make docs", sub, name)
			}
		}
		for name := range want {
			if _, ok := got[name]; !ok {
				t.Errorf("docs/%s/%s documents no command: run make docs", sub, name)
			}
		}
	}
}

// TestGenerate: every binary has its page, with its flags and --version,
// the output is reproducible, and stale pages are removed.
func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "cli", "romana_gone.md")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale page left: %v", err)
	}
	for file, wants := range map[string][]string{
		"cli/romana.md":         {"--server", "--version", "romana_host.md"},
		"cli/romanad.md":        {"--etcd-endpoints", "--version", "### Examples"},
		"cli/romana-agent.md":   {"--join", "--bgp-asn", "--version"},
		"cli/romana-cni.md":     {"CNI_COMMAND", "--version"},
		"man/romanad.1":         {`.TH "ROMANAD" "1" "Nov 2026" "Romana" "Romana Manual"`, "--etcd-endpoints"},
		"man/romana-host-add.1": {`.TH "ROMANA-HOST-ADD"`},
	} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Error(err)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q", file, w)
			}
		}
		if strings.Contains(string(b), "Auto generated") {
			t.Errorf("%s has a generation date", file)
		}
	}
	again := t.TempDir()
	if err := Generate(again); err != nil {
		t.Fatal(err)
	}
	a, b := files(t, filepath.Join(dir, "cli")), files(t, filepath.Join(again, "cli"))
	if len(a) != len(b) {
		t.Fatalf("two runs: %d and %d pages", len(a), len(b))
	}
	for name := range a {
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("two runs differ in %s", name)
		}
	}
}

func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

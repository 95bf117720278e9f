package main

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestStdlibOnly keeps the plugin binary thin: outside the standard
// library it may import only these packages (no CNI library, no netlink,
// no TLS client: see package forward).
func TestStdlibOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{"github.com/romana/romana/cmd/romana-cni", "github.com/romana/romana/cni/forward", "github.com/romana/romana/version"}
	for _, p := range strings.Fields(string(out)) {
		if !slices.Contains(allowed, p) {
			t.Errorf("romana-cni imports %s; it must stay stdlib-only (allowed: %v)", p, allowed)
		}
	}
	out, err = exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range []string{"net/http", "crypto/tls", "net", "runtime/cgo"} {
		if slices.Contains(strings.Fields(string(out)), p) {
			t.Errorf("romana-cni imports %s", p)
		}
	}
}

// TestStatic builds the plugin as `make build` does (a plain go build,
// cgo on when the machine has a C compiler) and checks that the binary is
// static: no program interpreter (the dynamic loader cost about 1 ms of
// every ADD and DEL; see cni/forward/unix.go).
func TestStatic(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "romana-cni")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("romana-cni built with cgo on is dynamically linked (it has a PT_INTERP program header); some import uses cgo")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("romana-cni needs shared libraries %v", libs)
	}
}

func TestByHand(t *testing.T) {
	for _, tt := range []struct {
		args         []string
		code         int
		stdout, errs string
	}{
		{nil, 0, "", "CNI protocol versions supported: 0.4.0, 1.0.0, 1.1.0"},
		{[]string{"--version"}, 0, "romana-cni version ", ""},
		{[]string{"--help"}, 0, "agentSocket", ""},
		{[]string{"--bogus"}, 2, "", `unknown argument "--bogus"`},
	} {
		var out, errs bytes.Buffer
		code := byHand(tt.args, &out, &errs)
		if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errs.String(), tt.errs) || (tt.stdout == "") != (out.Len() == 0) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", tt.args, code, out.String(), errs.String())
		}
	}
}

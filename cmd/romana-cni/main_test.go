package main

import (
	"bytes"
	"os/exec"
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
	for _, p := range []string{"net/http", "crypto/tls"} {
		if slices.Contains(strings.Fields(string(out)), p) {
			t.Errorf("romana-cni imports %s", p)
		}
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

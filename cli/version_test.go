package cli

import (
	"strings"
	"testing"

	"github.com/romana/romana/version"
)

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-v"}} {
		r := romana(t, nil, "", args...)
		if r.code != ExitOK || r.stdout != "romana version "+version.String()+"\n" {
			t.Errorf("romana %s: exit %d, stdout %q, stderr %q", args[0], r.code, r.stdout, r.stderr)
		}
	}
	if r := romana(t, nil, "", "--help"); !strings.Contains(r.stdout, "--version") {
		t.Errorf("--help does not list --version:\n%s", r.stdout)
	}
}

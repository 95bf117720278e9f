package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	defer func(v, c, d string) { Version, Commit, Date = v, c, d }(Version, Commit, Date)
	for _, tc := range []struct{ v, c, d, want string }{
		{"dev", "", "", "dev"},
		{"v1.2.0-3-gabc-dirty", "abc123", "2026-01-02T03:04:05Z", "v1.2.0-3-gabc-dirty (commit abc123, 2026-01-02T03:04:05Z)"},
		{"v1", "abc", "", "v1 (commit abc)"},
	} {
		Version, Commit, Date = tc.v, tc.c, tc.d
		if got := String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

// TestStampedBinaries: the four binaries `make build` left in $ROMANA_BIN
// print the version git describes (or "dev" outside git).
func TestStampedBinaries(t *testing.T) {
	bin := os.Getenv("ROMANA_BIN")
	if bin == "" {
		t.Skip("ROMANA_BIN is not set (make test sets it after make build)")
	}
	want := "dev"
	if out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		want = strings.TrimSpace(string(out))
	}
	for _, name := range []string{"romana", "romanad", "romana-agent", "romana-cni"} {
		cmd := exec.Command(filepath.Join(bin, name), "--version")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no CNI_COMMAND
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s --version: %v", name, err)
			continue
		}
		if got := string(out); !strings.HasPrefix(got, name+" version "+want+" ") && got != name+" version "+want+"\n" {
			t.Errorf("%s --version = %q, want %q and its commit", name, got, name+" version "+want)
		}
	}
}

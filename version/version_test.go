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
// print the version that git describes for the commit they were built from,
// with that commit and its date ("dev" when built outside git).
func TestStampedBinaries(t *testing.T) {
	bin := os.Getenv("ROMANA_BIN")
	if bin == "" {
		t.Skip("ROMANA_BIN is not set (make test sets it after make build)")
	}
	git := func(args ...string) string {
		out, err := exec.Command("git", args...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	inGit := git("rev-parse", "HEAD") != ""
	for _, name := range []string{"romana", "romanad", "romana-agent", "romana-cni"} {
		cmd := exec.Command(filepath.Join(bin, name), "--version")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no CNI_COMMAND
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s --version: %v", name, err)
			continue
		}
		got := strings.TrimSuffix(string(out), "\n")
		v, ok := strings.CutPrefix(got, name+" version ")
		if !ok {
			t.Errorf("%s --version = %q", name, got)
			continue
		}
		if !inGit {
			if v != "dev" {
				t.Errorf("%s --version = %q outside git, want dev", name, got)
			}
			continue
		}
		// v is "DESCRIBE (commit HASH, DATE)".
		var describe, commit, date string
		if i := strings.Index(v, " (commit "); i > 0 {
			describe = v[:i]
			commit, date, _ = strings.Cut(strings.TrimSuffix(v[i+len(" (commit "):], ")"), ", ")
		}
		want := git("describe", "--tags", "--always", commit)
		if commit == "" || want == "" || strings.TrimSuffix(describe, "-dirty") != want ||
			date != git("log", "-1", "--format=%cI", commit) {
			t.Errorf("%s --version = %q; want git describe of its commit (%q) and the commit's date", name, got, want)
		}
	}
}

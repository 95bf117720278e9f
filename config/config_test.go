package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type flags struct {
	fs        *pflag.FlagSet
	listen    *string
	advertise *string
	resync    *time.Duration
	conns     *int
	asn       *uint
	bgp       *bool
	peers     *[]string
}

func newFlags(t *testing.T, args ...string) flags {
	t.Helper()
	fs := pflag.NewFlagSet("romanad", pflag.ContinueOnError)
	f := flags{fs: fs,
		listen:    fs.String("listen", "127.0.0.1:9600", ""),
		advertise: fs.String("advertise", "", ""),
		resync:    fs.Duration("resync", 10*time.Second, ""),
		conns:     fs.Int("max-connections", 1000, ""),
		asn:       fs.Uint("bgp-asn", 64512, ""),
		bgp:       fs.Bool("bgp", false, ""),
		peers:     fs.StringSlice("peers", nil, ""),
	}
	AddFlag(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "romanad.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValuesApplied(t *testing.T) {
	p := writeConf(t, `# romanad
listen: 0.0.0.0:9600
advertise: [romanad.example, 10.0.0.5]
resync: 1m30s
max-connections: 50
bgp-asn: 65001
bgp: true
peers:
  - a
  - b
`)
	f := newFlags(t, "--config-file", p)
	if err := Apply(f.fs); err != nil {
		t.Fatal(err)
	}
	if *f.listen != "0.0.0.0:9600" || *f.advertise != "romanad.example,10.0.0.5" || *f.resync != 90*time.Second ||
		*f.conns != 50 || *f.asn != 65001 || !*f.bgp || strings.Join(*f.peers, "|") != "a|b" {
		t.Fatalf("got listen %q advertise %q resync %s conns %d asn %d bgp %v peers %q",
			*f.listen, *f.advertise, *f.resync, *f.conns, *f.asn, *f.bgp, *f.peers)
	}
	if !f.fs.Changed("listen") || f.fs.Changed("config-file") == false {
		t.Error("flags set from the file should count as changed")
	}
}

func TestCommandLineWins(t *testing.T) {
	p := writeConf(t, "listen: 0.0.0.0:9600\nresync: 1m\npeers: [x, y]\n")
	f := newFlags(t, "--config-file="+p, "--listen", "10.1.1.1:9600", "--peers", "z")
	if err := Apply(f.fs); err != nil {
		t.Fatal(err)
	}
	if *f.listen != "10.1.1.1:9600" {
		t.Errorf("listen = %q, want the command line's", *f.listen)
	}
	if *f.resync != time.Minute {
		t.Errorf("resync = %s, want the file's 1m", *f.resync)
	}
	if strings.Join(*f.peers, ",") != "z" {
		t.Errorf("peers = %q, want the command line's", *f.peers)
	}
}

func TestNoConfigFileFlagIsNoop(t *testing.T) {
	f := newFlags(t)
	if err := Apply(f.fs); err != nil {
		t.Fatal(err)
	}
	if *f.listen != "127.0.0.1:9600" {
		t.Errorf("listen = %q", *f.listen)
	}
	bare := pflag.NewFlagSet("x", pflag.ContinueOnError)
	if err := Apply(bare); err != nil {
		t.Fatalf("a flag set without --config-file: %v", err)
	}
}

func TestEmptyAndCommentOnlyFiles(t *testing.T) {
	for _, text := range []string{"", "# all defaults\n# listen: 0.0.0.0:9600\n", "---\n", "~\n"} {
		f := newFlags(t)
		if err := Parse("e.yaml", []byte(text), f.fs); err != nil {
			t.Errorf("%q: %v", text, err)
		}
		if *f.listen != "127.0.0.1:9600" {
			t.Errorf("%q changed listen to %q", text, *f.listen)
		}
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // substrings of the error
	}{
		{"unknown key", "listen: a:1\nlistn: b:2\n", []string{"f.yaml:2:", `key "listn"`, "unknown", `did you mean "listen"`}},
		{"unknown far key", "\n\nzzzzzzzz: 1\n", []string{"f.yaml:3:", `key "zzzzzzzz"`, "unknown (no flag --zzzzzzzz)"}},
		{"bad duration", "resync: 10\n", []string{"f.yaml:1:", `key "resync"`, `"10" is not a duration`}},
		{"bad int", "listen: x\nmax-connections: many\n", []string{"f.yaml:2:", `key "max-connections"`, `"many" is not a whole number`}},
		{"negative uint", "bgp-asn: -1\n", []string{"f.yaml:1:", `key "bgp-asn"`, "0 or more"}},
		{"bad bool", "bgp: maybe\n", []string{"f.yaml:1:", `key "bgp"`, "true or false"}},
		{"null value", "listen:\n", []string{"f.yaml:1:", `key "listen"`, "no value"}},
		{"mapping value", "listen:\n  host: a\n", []string{"f.yaml:1:", `key "listen"`, "found a mapping"}},
		{"nested list", "peers: [[a]]\n", []string{"f.yaml:1:", `key "peers"`, "plain values"}},
		{"twice", "listen: a\nresync: 1s\nlisten: b\n", []string{"f.yaml:3:", `key "listen"`, "given twice (first on line 1)"}},
		{"config-file key", "config-file: other.yaml\n", []string{"f.yaml:1:", `key "config-file"`, "cannot name another"}},
		{"help key", "help: true\n", []string{"f.yaml:1:", `key "help"`, "unknown"}},
		{"not a mapping", "- listen\n", []string{"f.yaml:1:", "expected a mapping", "found a list"}},
		{"scalar document", "listen\n", []string{"f.yaml:1:", "expected a mapping"}},
		{"syntax", "listen: a\n  resync: [\n", []string{"f.yaml:2: mapping values are not allowed"}},
		{"two documents", "listen: a\n---\nresync: 1s\n", []string{"f.yaml:2:", "more than one YAML document"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFlags(t)
			err := Parse("f.yaml", []byte(tc.text), f.fs)
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "strconv") || strings.Contains(err.Error(), "time:") {
				t.Errorf("error %q speaks Go", err)
			}
		})
	}
}

// A bad value anywhere in the file leaves every flag as it was.
func TestBadFileChangesNothing(t *testing.T) {
	f := newFlags(t)
	err := Parse("f.yaml", []byte("listen: 0.0.0.0:1\nadvertise: [a, b]\nresync: soon\n"), f.fs)
	if err == nil {
		t.Fatal("no error")
	}
	if *f.listen != "127.0.0.1:9600" || *f.advertise != "" || f.fs.Changed("listen") {
		t.Fatalf("flags changed by a refused file: listen %q advertise %q", *f.listen, *f.advertise)
	}
}

func TestMissingFile(t *testing.T) {
	f := newFlags(t, "--config-file", "/nonexistent/romanad.yaml")
	err := Apply(f.fs)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/romanad.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"listen", "listen", 0}, {"listn", "listen", 1}, {"resnyc", "resync", 2}, {"", "abc", 3}} {
		if got := distance(tc.a, tc.b); got != tc.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}

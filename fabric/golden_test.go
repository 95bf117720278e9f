package fabric

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

var formatExt = map[string]string{FormatIP: "sh", FormatBird: "bird.conf", FormatFRR: "frr.conf"}

var scenarios = []struct {
	name    string
	snap    func(testing.TB) api.Snapshot
	devices []string
	hosts   []string
}{
	{"leafspine", leafSpine, []string{"tor1", "tor2a", "tor2b", "spine1", "spine2"}, []string{"h1", "h3"}},
	{"leafspine6", leafSpine6, []string{"tor1", "spine1"}, []string{"h2"}},
	{"dualstack", dualStack, []string{"tor1", "tor2", "spine1"}, []string{"h1", "h3"}},
}

// TestGolden renders every device's routes in the three syntaxes, and each
// listed host's BGP decision, and compares them with testdata.
func TestGolden(t *testing.T) {
	for _, sc := range scenarios {
		snap := sc.snap(t)
		for _, dev := range sc.devices {
			tab, err := Compute(snap, dev)
			if err != nil {
				t.Fatal(err)
			}
			if len(tab.Problems) > 0 {
				t.Errorf("%s/%s: problems: %q", sc.name, dev, tab.Problems)
			}
			for _, f := range Formats {
				out, err := Render(tab, f)
				if err != nil {
					t.Fatal(err)
				}
				expect.Golden(t, fmt.Sprintf("%s/%s.%s", sc.name, dev, formatExt[f]), out)
			}
			var ann strings.Builder
			for _, a := range tab.Announce {
				fmt.Fprintf(&ann, "announce %s\n", a)
			}
			expect.Golden(t, fmt.Sprintf("%s/%s.announce", sc.name, dev), ann.String())
		}
		for _, h := range sc.hosts {
			hb, err := ForHost(snap, h)
			if err != nil {
				t.Fatal(err)
			}
			expect.Golden(t, fmt.Sprintf("%s/host-%s.bgp", sc.name, h), hb.String())
		}
	}
}

// TestBirdParses feeds every rendered BIRD file to `bird -p` (parse only).
func TestBirdParses(t *testing.T) {
	bird, err := exec.LookPath("bird")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs bird (Debian bird2): %v", err)
		}
		t.Skipf("needs bird (Debian bird2): %v", err)
	}
	files, err := filepath.Glob("testdata/*/*.bird.conf")
	if err != nil || len(files) == 0 {
		t.Fatalf("no BIRD golden files: %v", err)
	}
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		conf := filepath.Join(t.TempDir(), "bird.conf")
		body := fmt.Sprintf("router id 192.0.2.1;\nprotocol device {}\ninclude \"%s\";\n", abs)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, bird, "-p", "-c", conf).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("bird -p rejects %s: %v\n%s", f, err, out)
		}
	}
}

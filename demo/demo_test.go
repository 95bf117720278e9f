package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// binDir returns a directory holding romanad, romana-agent, romana-cni and romana:
// $ROMANA_BIN (set by the Makefile) or a fresh build.
func binDir(t *testing.T) string {
	if d := os.Getenv("ROMANA_BIN"); d != "" {
		return d
	}
	d := t.TempDir()
	cmd := exec.Command("go", "build", "-o", d+"/", "github.com/romana/romana/cmd/romanad",
		"github.com/romana/romana/cmd/romana-agent", "github.com/romana/romana/cmd/romana-cni", "github.com/romana/romana/cmd/romana")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build binaries: %v\n%s", err, out)
	}
	return d
}

// labPrefix returns a namespace prefix for one test run: base and random
// hex digits, so that runs on one machine at the same time (other
// packages' tests, other checkouts) never share namespaces, and a demo's
// clean-up of a previous run with its prefix never reaches another's.
func labPrefix(t *testing.T, base string) string {
	t.Helper()
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base + hex.EncodeToString(b)
}

func requireRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the demo test needs root (network namespaces)")
	}
	t.Skip("needs root")
}

// TestDemoFlat runs the whole flat demo and requires the observed
// connectivity to match the expected one, every namespace to be gone
// afterwards, and each host to carry exactly one route per remote host.
func TestDemoFlat(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	prefix := labPrefix(t, "romt-df")
	res, err := Run(ctx, Options{Hosts: 3, Prefix: prefix, BinDir: binDir(t), Out: &out})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !res.OK || len(res.Matrix.Endpoints) != 8 {
		t.Fatalf("demo result not ok: %+v\n%s", res, out.String())
	}
	allowed, blocked := 0, 0
	for _, c := range res.Matrix.Cells {
		if c.From == c.To {
			continue
		}
		if c.TCP {
			allowed++
		} else {
			blocked++
		}
	}
	// acme (tenant mode): 4 endpoints -> 12 pairs; globex (segment mode):
	// 2 segments x 2 endpoints -> 4 pairs.
	if allowed != 16 || blocked != 40 {
		t.Errorf("allowed %d, blocked %d; want 16 and 40\n%s", allowed, blocked, out.String())
	}
	for _, h := range res.Hosts {
		if h.RemoteRoutes != 2 {
			t.Errorf("host %s: %d routes to remote hosts, want 2", h.Name, h.RemoteRoutes)
		}
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Errorf("no PASS line in output:\n%s", out.String())
	}
	// The join step is shown, agents joined over TLS, and no join secret
	// is printed.
	for _, want := range []string{"(mutual TLS)", "$ romana host add h1 --ip ", "$ romana-agent --join rmn1.",
		"--server https://" + controllerAddr.Addr().String() + ":9600", "every agent joined as host:NAME over TLS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	noSecrets(t, out.String())
	left, _ := filepath.Glob("/run/netns/" + prefix + "-*")
	if len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// joinTokenRE matches a join token with its secret.
var joinTokenRE = regexp.MustCompile(`rmn1\.[0-9a-f]{8}\.[0-9a-f]{32}`)

// noSecrets fails the test if the demo's output shows a join token's secret.
func noSecrets(t *testing.T, out string) {
	t.Helper()
	if m := joinTokenRE.FindString(out); m != "" {
		t.Errorf("the output shows a join token with its secret: %s", m)
	}
}

func TestExpect(t *testing.T) {
	modes := map[string]string{"a": "tenant", "b": "segment", "c": "none"}
	ep := func(t, s string) Endpoint { return Endpoint{Tenant: t, Segment: s} }
	cases := []struct {
		src, dst Endpoint
		want     bool
	}{
		{ep("a", "x"), ep("a", "y"), true},
		{ep("b", "x"), ep("a", "y"), false},
		{ep("b", "x"), ep("b", "x"), true},
		{ep("b", "x"), ep("b", "y"), false},
		{ep("a", "x"), ep("b", "x"), false},
		{ep("a", "x"), ep("c", "z"), true},
	}
	for _, c := range cases {
		if got := Expect(modes, c.src, c.dst); got != c.want {
			t.Errorf("Expect(%v -> %v) = %v, want %v", c.src, c.dst, got, c.want)
		}
	}
}

func TestCountNft(t *testing.T) {
	js := `{"nftables":[{"metainfo":{}},{"table":{}},{"chain":{}},{"rule":{}},{"rule":{}},{"map":{"elem":[[1,2],[3,4]]}},{"set":{}}]}`
	r, e, err := countNft([]byte(js))
	if err != nil || r != 2 || e != 2 {
		t.Fatalf("countNft = %d, %d, %v; want 2, 2, nil", r, e, err)
	}
}

package cli

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// completions runs cobra's hidden completion command (what the shell
// scripts of "romana completion" call) and returns the offered words, with
// their descriptions, and the directive line.
func (s cliSession) completions(args ...string) ([]string, string) {
	s.t.Helper()
	r := s.run("", append([]string{"__complete"}, args...)...)
	if r.code != ExitOK {
		s.t.Fatalf("romana __complete %q: exit %d: %s", args, r.code, r.stderr)
	}
	var words []string
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ":") && i == len(lines)-1 {
			return words, l
		}
		words = append(words, l)
	}
	s.t.Fatalf("romana __complete %q: no directive line in %q", args, r.stdout)
	return nil, ""
}

// TestCompletion: names complete from a real romanad, asked with the
// command line's own credential and server.
func TestCompletion(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)
	s.ok("network", "add", "pods", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=4", "--field", "segment=4")
	s.ok("host", "add", "h1", "--ip", "192.168.1.11", "--no-token")
	s.ok("host", "add", "h2", "--ip", "192.168.1.12", "--no-token")
	s.ok("tenant", "add", "acme")
	s.ok("tenant", "add", "infra", "--isolation", "none")
	s.ok("segment", "add", "acme", "web")
	s.ok("segment", "add", "acme", "db")
	s.ok("segment", "add", "infra", "fw")
	fw, err := c.Allocate(ctx, api.AddressRequest{Name: "fw1", Host: "h1", Tenant: "infra", Segment: "fw", Interface: "rv-fw1"})
	if err != nil {
		t.Fatal(err)
	}
	s.ok("address", "allocate", "web-1", "--host", "h2", "--tenant", "acme", "--segment", "web")
	web1, err := c.GetAddress(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	s.ok("chain", "add", "inspect", "--from", "acme/web", "--via", fw.IP.String())
	if r := s.run(`{"name":"web-in","description":"lb to web","direction":["ingress"],"appliedTo":[{"tenant":"acme","segment":"web"}],
"rules":[{"peers":[{"cidr":"192.168.0.0/24"}],"protocol":"tcp","ports":[80]}]}`, "policy", "add", "-f", "-"); r.code != ExitOK {
		t.Fatalf("policy add: %s", r.stderr)
	}
	if _, err := c.PutDevice(ctx, api.Device{Name: "spine1", Kind: api.DeviceSpine, ASN: 65100}); err != nil {
		t.Fatal(err)
	}

	const noFiles = ":4" // cobra.ShellCompDirectiveNoFileComp
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"host", "show", ""}, []string{"h1\t192.168.1.11", "h2\t192.168.1.12"}},
		{[]string{"host", "token", "h2"}, []string{"h2\t192.168.1.12"}},
		{[]string{"host", "remove", "h1", ""}, nil}, // one argument only
		{[]string{"network", "show", ""}, []string{"pods\t10.0.0.0/8"}},
		{[]string{"tenant", "remove", ""}, []string{"acme\ttenant", "infra\ttenant"}},
		{[]string{"segment", "show", "a"}, []string{"acme\ttenant"}},
		{[]string{"segment", "show", "acme", ""}, []string{"db\tsegment of acme", "web\tsegment of acme"}},
		{[]string{"segment", "remove", "infra", ""}, []string{"fw\tsegment of infra"}},
		{[]string{"address", "show", ""}, []string{"fw1\t" + fw.IP.String(), "web-1\t" + web1.IP.String()}},
		{[]string{"address", "release", "w"}, []string{"web-1\t" + web1.IP.String()}},
		{[]string{"address", "release", "--ip", ""}, []string{fw.IP.String() + "\tfw1", web1.IP.String() + "\tweb-1"}},
		{[]string{"address", "allocate", "x", "--host", ""}, []string{"h1\t192.168.1.11", "h2\t192.168.1.12"}},
		{[]string{"address", "allocate", "x", "--tenant", "acme", "--segment", ""}, []string{"db\tsegment of acme", "web\tsegment of acme"}},
		{[]string{"address", "list", "--segment", ""}, []string{"db\tsegment", "fw\tsegment", "web\tsegment"}},
		{[]string{"address", "list", "--network", ""}, []string{"pods\t10.0.0.0/8"}},
		{[]string{"policy", "show", ""}, []string{"web-in\tlb to web"}},
		{[]string{"policy", "stats", "--policy", "w"}, []string{"web-in\tlb to web"}},
		{[]string{"policy", "trace", "--from", "10."}, []string{fw.IP.String() + "\tfw1", web1.IP.String() + "\tweb-1"}},
		{[]string{"chain", "remove", ""}, []string{"inspect\tacme/web"}},
		{[]string{"chain", "add", "c2", "--from", "acme/"}, []string{"acme/db", "acme/web"}},
		{[]string{"device", "show", ""}, []string{"spine1\tspine"}},
		{[]string{"fabric", "routes", "--device", ""}, []string{"spine1\tspine"}},
		{[]string{"plan", "--network", ""}, []string{"pods\t10.0.0.0/8"}},
		{[]string{"host", "show", "zz"}, nil},
	} {
		got, directive := s.completions(tc.args...)
		if !reflect.DeepEqual(got, tc.want) || directive != noFiles {
			t.Errorf("romana __complete %q = %q %s, want %q %s", tc.args, got, directive, tc.want, noFiles)
		}
	}

	// The credential and server of the command line being completed: a
	// viewer may read names; with no credential and an unreachable server
	// nothing is offered, and completion still succeeds.
	viewer := srv.WriteCredential(t, pki.Viewer, t.TempDir())
	bare := cliSession{t: t, env: map[string]string{}}
	if got, _ := bare.completions("--config", viewer, "host", "show", ""); !reflect.DeepEqual(got, []string{"h1\t192.168.1.11", "h2\t192.168.1.12"}) {
		t.Errorf("with --config (viewer): %q", got)
	}
	nowhere := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	if got, directive := bare.completions("--server", nowhere, "host", "show", ""); got != nil || directive != noFiles {
		t.Errorf("unreachable server: %q %s", got, directive)
	}
}

// TestCompletionTables: every command and flag the completion tables name
// exists (wireCompletion panics otherwise) and has its function.
func TestCompletionTables(t *testing.T) {
	root := NewRoot()
	for path := range completedArgs {
		c, _, err := root.Find(strings.Fields(path))
		if err != nil || c.ValidArgsFunction == nil {
			t.Errorf("%s: %v, completion %v", path, err, c.ValidArgsFunction != nil)
		}
	}
	for path, flags := range completedFlags {
		c, _, _ := root.Find(strings.Fields(path))
		for name := range flags {
			if _, ok := c.GetFlagCompletionFunc(name); !ok {
				t.Errorf("%s --%s: no completion", path, name)
			}
		}
	}
}

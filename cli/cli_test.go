package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/romana/romana/expect"
)

// result is one in-process run of the romana command line.
type result struct {
	stdout, stderr string
	code           int
}

// romana runs the command line in-process with an empty environment (plus
// env), the given stdin, and no default admin credential (the machine's
// /etc/romana/admin.conf is never read).
func romana(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	return romanaWith(t, env, filepath.Join(t.TempDir(), "no-admin.conf"), stdin, args...)
}

// romanaWith is romana with adminConfig as the default credential path.
func romanaWith(t *testing.T, env map[string]string, adminConfig, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := Main(context.Background(), args, strings.NewReader(stdin), &out, &errb, WithGetenv(getenv), WithAdminConfig(adminConfig))
	return result{out.String(), errb.String(), code}
}

const rackPlan = `name: dc1
cidr: 10.0.0.0/8
fields:
- {name: rack, bits: 4}
- {name: host, bits: 6}
- {name: tenant, bits: 6}
- {name: segment, bits: 4}
`

// TestPlanOffline: `romana plan` works without a server, from flags, a file
// or stdin, in every output format.
func TestPlanOffline(t *testing.T) {
	dir := t.TempDir()
	planFile := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(planFile, []byte(rackPlan), 0o644); err != nil {
		t.Fatal(err)
	}
	jsonFile := filepath.Join(dir, "plan.json")
	if err := os.WriteFile(jsonFile, []byte(`{"name":"v6","cidr":"fd00:1::/48","fields":[{"name":"host","bits":16},{"name":"tenant","bits":16},{"name":"segment","bits":16}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// No server anywhere: a request would fail.
	env := map[string]string{EnvServer: "unix:///nonexistent/romanad.sock"}
	for _, tc := range []struct {
		golden string
		stdin  string
		args   []string
	}{
		{"plan-example.txt", "", []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4",
			"--host-loc", "1", "--tenant", "1", "--segment", "1", "--endpoint", "11"}},
		{"plan-example.json", "", []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4",
			"--host-loc", "1", "--tenant", "1", "--segment", "1", "--endpoint", "11", "-o", "json"}},
		{"plan-racks.txt", "", []string{"plan", "-f", planFile, "--host-loc", "2.3", "--tenant", "5", "--segment", "2"}},
		{"plan-racks.yaml", "", []string{"plan", "-f", planFile, "-o", "yaml"}},
		{"plan-stdin-tenant.txt", rackPlan, []string{"plan", "-f", "-", "--tenant", "5"}},
		{"plan-v6.txt", "", []string{"plan", "-f", jsonFile, "--host-loc", "171", "--tenant", "2", "--segment", "3", "--endpoint", "65541"}},
		{"plan-v6-wide.txt", "", []string{"plan", "--name", "big", "--cidr", "fd00::/32", "--field", "zone=8", "--field", "rack=8",
			"--field", "host=8", "--field", "tenant=8", "--field", "segment=8"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			r := romana(t, env, tc.stdin, tc.args...)
			if r.code != ExitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			expect.Golden(t, tc.golden, r.stdout)
		})
	}
}

// TestPlanWorkedExample checks the product page's numbers in the table
// directly, independent of the golden file.
func TestPlanWorkedExample(t *testing.T) {
	r := romana(t, nil, "", "plan", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4",
		"--host-loc", "1", "--tenant", "1", "--segment", "1", "--endpoint", "11")
	for _, want := range []string{
		"host CIDR                   10.1.0.0/16",
		"tenant CIDR on the host     10.1.1.0/24",
		"segment CIDR on the host    10.1.1.16/28",
		"endpoint 11                 10.1.1.27",
		"tenant match (every host)   10.0.1.0/255.0.255.0",
		"hosts                           256",
		"endpoints per segment per host  14 (index 1 to 14)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestExitCodesAndMessages(t *testing.T) {
	noServer := map[string]string{EnvServer: "unix:///nonexistent/romanad.sock"}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string // the first line, exactly
	}{
		{"unknown command", nil, []string{"bogus"}, ExitUsage, `Error: unknown command "bogus" for "romana"`},
		{"unknown subcommand", nil, []string{"network", "bogus"}, ExitUsage, `Error: unknown command "bogus" for "romana network"`},
		{"unknown flag", nil, []string{"network", "list", "--bogus"}, ExitUsage, `Error: unknown flag: --bogus`},
		{"missing arg", nil, []string{"network", "show"}, ExitUsage, `Error: accepts 1 arg(s), received 0`},
		{"extra arg", nil, []string{"segment", "add", "acme"}, ExitUsage, `Error: accepts 2 arg(s), received 1`},
		{"bad output", nil, []string{"network", "list", "-o", "xml"}, ExitUsage, `Error: invalid output format "xml": use table, json or yaml`},
		{"plan no source", nil, []string{"plan"}, ExitUsage, `Error: give the layout with exactly one of -f FILE, --cidr with --field, or --network NAME`},
		{"plan two sources", nil, []string{"plan", "--cidr", "10.0.0.0/8", "--network", "x"}, ExitUsage, `Error: give the layout with exactly one of -f FILE, --cidr with --field, or --network NAME`},
		{"bad field flag", nil, []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host"}, ExitUsage, `Error: --field "host": want NAME=BITS, for example host=8`},
		{"bad field bits", nil, []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host=x"}, ExitUsage, `Error: --field "host=x": bits must be a whole number`},
		{"bad host loc", nil, []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4", "--host-loc", "a.b"},
			ExitUsage, `Error: --host-loc "a.b": want dot-separated ids, group ids first, for example 5 or 2.17`},
		{"segment without tenant", nil, []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4", "--segment", "1"},
			ExitUsage, `Error: --segment needs --tenant`},
		{"plan does not fit", nil, []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host=16", "--field", "tenant=8", "--field", "segment=8"},
			ExitError, `Error: fields need 32 bits but 10.0.0.0/8 leaves only 24`},
		{"plan wrong order", nil, []string{"plan", "--name", "n", "--cidr", "10.0.0.0/8", "--field", "tenant=8", "--field", "host=8", "--field", "segment=4"},
			ExitError, `Error: network "n": field 0 is "tenant", expected "host": the layout ends with host, tenant, segment`},
		{"plan loc does not fit", nil, []string{"plan", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4", "--host-loc", "256"},
			ExitError, `Error: location does not fit the plan: host 256 does not fit in 8 bits (max 255)`},
		{"plan loc levels", nil, []string{"plan", "--name", "n", "--cidr", "10.0.0.0/8", "--field", "rack=2", "--field", "host=6", "--field", "tenant=8", "--field", "segment=4", "--host-loc", "3"},
			ExitError, `Error: host location "3": network "n" has 1 topology level(s) (rack), so give 1 group id(s) then the host id, separated by dots`},
		{"plan file missing", nil, []string{"plan", "-f", "/nonexistent/plan.yaml"}, ExitError, `Error: read /nonexistent/plan.yaml: open /nonexistent/plan.yaml: no such file or directory`},
		{"bad server", map[string]string{EnvServer: "ftp://x"}, []string{"tenant", "list"}, ExitUsage,
			`Error: server "ftp://x": want https://HOST:PORT or unix:///PATH`},
		{"flag beats env", map[string]string{EnvServer: "ftp://x"}, []string{"tenant", "list", "--server", "gopher://y"}, ExitUsage,
			`Error: server "gopher://y": want https://HOST:PORT or unix:///PATH`},
		{"http refused", nil, []string{"tenant", "list", "--server", "http://10.0.0.1:9600"}, ExitUsage,
			`Error: server "http://10.0.0.1:9600": romanad serves TCP over TLS only: use https://10.0.0.1:9600 with a credential (--config), or unix:///run/romana/romanad.sock as root on romanad's machine`},
		{"http refused before the credential is read", map[string]string{EnvServer: "http://h:9600", EnvConfig: "/nonexistent/c.conf"}, []string{"tenant", "list"}, ExitUsage,
			`Error: server "http://h:9600": romanad serves TCP over TLS only: use https://h:9600 with a credential (--config), or unix:///run/romana/romanad.sock as root on romanad's machine`},
		{"missing credential", map[string]string{EnvConfig: "/nonexistent/c.conf"}, []string{"tenant", "list"}, ExitError,
			`Error: no credential: /nonexistent/c.conf (from ROMANA_CONFIG) does not exist (romanad writes /etc/romana/admin.conf on first start; or set --config)`},
		{"unix socket needs no credential", map[string]string{EnvServer: "unix:///nonexistent/romanad.sock", EnvConfig: "/nonexistent/c.conf"}, []string{"tenant", "list"}, ExitError,
			`Error: cannot reach romanad at unix:///nonexistent/romanad.sock (set --server or ROMANA_SERVER): GET /v1/tenants: Get "http://unix/v1/tenants": dial unix /nonexistent/romanad.sock: connect: no such file or directory`},
		{"revoke nothing named", noServer, []string{"cert", "revoke"}, ExitUsage, `Error: name what to revoke: --serial S or --identity ID (repeatable)`},
		{"revoke bad identity", noServer, []string{"cert", "revoke", "--identity", "root"}, ExitUsage,
			`Error: --identity: identity "root": want admin, viewer, kube, host:NAME or cni:NAME`},
		{"issue without out", noServer, []string{"cert", "issue", "--identity", "viewer"}, ExitUsage, `Error: need --identity and --out`},
		{"issue bad validity", noServer, []string{"cert", "issue", "--identity", "viewer", "--out", "/tmp/x", "--validity", "month"}, ExitUsage,
			`Error: --validity "month": want a positive duration, e.g. 15m or 1h`},
		{"issue over the socket needs a server", noServer, []string{"cert", "issue", "--identity", "viewer", "--out", "/tmp/romana-cli-test-never-written.conf"}, ExitUsage,
			`Error: this command uses the unix socket: give romanad's address for the credential with --credential-server https://HOST:PORT`},
		{"host token bad ttl", noServer, []string{"host", "token", "h1", "--ttl", "-5m"}, ExitUsage, `Error: --ttl "-5m": want a positive duration, e.g. 15m or 1h`},
		{"host add bad token ttl", noServer, []string{"host", "add", "h1", "--ip", "192.0.2.1", "--token-ttl", "soon"}, ExitUsage,
			`Error: --token-ttl "soon": want a positive duration, e.g. 15m or 1h`},
		{"unreachable", noServer, []string{"tenant", "list"}, ExitError,
			`Error: cannot reach romanad at unix:///nonexistent/romanad.sock (set --server or ROMANA_SERVER): GET /v1/tenants: Get "http://unix/v1/tenants": dial unix /nonexistent/romanad.sock: connect: no such file or directory`},
		{"release both", noServer, []string{"address", "release", "x", "--ip", "10.0.0.1"}, ExitUsage, `Error: give either NAME or --ip IP`},
		{"release neither", noServer, []string{"address", "release"}, ExitUsage, `Error: give either NAME or --ip IP`},
		{"release bad ip", noServer, []string{"address", "release", "--ip", "10.0.0"}, ExitUsage, `Error: --ip "10.0.0": not an IP address (IPv4 address too short)`},
		{"decode bad ip", noServer, []string{"address", "decode", "nope"}, ExitUsage, `Error: "nope" is not an IP address (unable to parse IP)`},
		// Bad values on the command line are usage errors (exit 2) in the
		// user's terms, never Go's (netip.ParsePrefix, strconv.ParseUint).
		{"plan cidr length", nil, []string{"plan", "--cidr", "10.0.0.0/33", "--field", "host=8"}, ExitUsage,
			`Error: --cidr "10.0.0.0/33": prefix length "33": want a whole number from 0 to 32 for IPv4`},
		{"plan cidr v6 length", nil, []string{"plan", "--cidr", "fd00::/129", "--field", "host=8"}, ExitUsage,
			`Error: --cidr "fd00::/129": prefix length "129": want a whole number from 0 to 128 for IPv6`},
		{"plan cidr no length", nil, []string{"plan", "--cidr", "10.0.0.0", "--field", "host=8"}, ExitUsage,
			`Error: --cidr "10.0.0.0": want ADDRESS/LENGTH, for example 10.0.0.0/8`},
		{"network add cidr", noServer, []string{"network", "add", "n", "--cidr", "10.0.0.0/33", "--field", "host=8"}, ExitUsage,
			`Error: --cidr "10.0.0.0/33": prefix length "33": want a whole number from 0 to 32 for IPv4`},
		{"network add cidr address", noServer, []string{"network", "add", "n", "--cidr", "10.0.x.0/8", "--field", "host=8"}, ExitUsage,
			`Error: --cidr "10.0.x.0/8": "10.0.x.0" is not an IP address (unexpected character (at "x.0"))`},
		{"device kind", noServer, []string{"device", "add", "d1", "--kind", "leaf"}, ExitUsage, `Error: --kind "leaf": use tor (a top-of-rack router, a leaf) or spine`},
		{"device router id", noServer, []string{"device", "add", "d1", "--kind", "tor", "--router-id", "1.2.3"}, ExitUsage,
			`Error: --router-id "1.2.3": not an IP address (IPv4 address too short)`},
		{"device link length", noServer, []string{"device", "add", "d1", "--kind", "tor", "--link", "s1=172.16.0.1/40"}, ExitUsage,
			`Error: --link "s1=172.16.0.1/40": local address "172.16.0.1/40": prefix length "40": want a whole number from 0 to 32 for IPv4`},
		{"device asn", noServer, []string{"device", "add", "d1", "--kind", "tor", "--asn", "x"}, ExitUsage, `Error: --asn "x": want a whole number from 0 to 4294967295`},
		{"host add bad ip", noServer, []string{"host", "add", "h1", "--ip", "1.2.3"}, ExitUsage, `Error: --ip "1.2.3": not an IP address (IPv4 address too short)`},
		{"trace port not a number", noServer, []string{"policy", "trace", "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "http"}, ExitUsage,
			`Error: --port "http": want a whole number from 0 to 65535`},
		{"trace port too big", noServer, []string{"policy", "trace", "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "70000"}, ExitUsage,
			`Error: --port "70000": want a whole number from 0 to 65535`},
		{"trace bad from", noServer, []string{"policy", "trace", "--from", "10.0.0", "--to", "10.0.0.2", "--port", "80"}, ExitUsage,
			`Error: --from "10.0.0": not an IP address (IPv4 address too short)`},
		{"trace icmp with a port", noServer, []string{"policy", "trace", "--from", "10.0.0.1", "--to", "10.0.0.2", "--proto", "icmp", "--port", "80"}, ExitUsage,
			`Error: --port is for tcp, udp and sctp: ICMP has no ports (use --icmp-type and --icmp-code)`},
		{"trace tcp with an icmp type", noServer, []string{"policy", "trace", "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "80", "--icmp-type", "0"}, ExitUsage,
			`Error: --icmp-type is for --proto icmp, not tcp`},
		// romana demo: combinations it would ignore are usage errors,
		// checked before anything runs (no root needed).
		{"demo one host", nil, []string{"demo", "--hosts", "1"}, ExitUsage, `Error: --hosts 1: use 2 to 50`},
		{"demo chain on a fabric", nil, []string{"demo", "--scenario", "chain", "--fabric", "leafspine"}, ExitUsage,
			`Error: --scenario chain runs on the flat datacenter, not with --fabric`},
		{"demo hosts on a fabric", nil, []string{"demo", "--hosts", "6", "--fabric", "leafspine"}, ExitUsage,
			`Error: --fabric leafspine has a fixed 2 racks x 2 hosts: drop --hosts`},
		{"demo fabric routes alone", nil, []string{"demo", "--fabric-routes", "static"}, ExitUsage,
			`Error: --fabric-routes chooses how the fabric's routers learn routes: it needs --fabric leafspine`},
		{"demo bad fabric", nil, []string{"demo", "--fabric", "clos"}, ExitUsage, `Error: --fabric "clos": the only topology is "leafspine"`},
		{"demo bad fabric routes", nil, []string{"demo", "--fabric", "leafspine", "--fabric-routes", "ospf"}, ExitUsage,
			`Error: --fabric-routes "ospf": use "bgp" or "static"`},
		{"demo bad scenario", nil, []string{"demo", "--scenario", "nat"}, ExitUsage, `Error: --scenario "nat": the only scenario is "chain"`},
		{"demo down with run flags", nil, []string{"demo", "--down", "--keep"}, ExitUsage,
			`Error: --down takes only --prefix (it removes the demo with that prefix): drop --keep`},
		{"timeout without unit", noServer, []string{"tenant", "list", "--timeout", "5"}, ExitUsage, `Error: --timeout "5": want a duration with a unit, e.g. 30s, 5m or 1h`},
		{"allocate incomplete", noServer, []string{"address", "allocate", "a", "--host", "h1", "--tenant", "t"}, ExitUsage, `Error: need --segment (all of --host, --tenant and --segment)`},
		{"host without ip", noServer, []string{"host", "add", "h1"}, ExitUsage, `Error: need --ip, the host's underlay address`},
		{"host bad label", noServer, []string{"host", "add", "h1", "--ip", "192.0.2.1", "--label", "rack"}, ExitUsage,
			`Error: invalid argument "rack" for "--label" flag: rack must be formatted as key=value`},
		{"tenant bad isolation", noServer, []string{"tenant", "add", "t", "--isolation", "full"}, ExitUsage, `Error: --isolation "full": use tenant, segment or none`},
		{"network add no layout", noServer, []string{"network", "add", "n"}, ExitUsage, `Error: need --cidr and --field (or -f FILE)`},
		{"policy add no file", noServer, []string{"policy", "add"}, ExitUsage, `Error: need -f FILE (or -f - for stdin)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := romana(t, tc.env, "", tc.args...)
			if r.code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			first, rest, _ := strings.Cut(r.stderr, "\n")
			if first != tc.stderr {
				t.Errorf("stderr\n got %s\nwant %s", first, tc.stderr)
			}
			if tc.code == ExitUsage && !strings.Contains(rest, "--help' for usage.") {
				t.Errorf("usage error without a pointer to --help: %q", r.stderr)
			}
			if tc.code == ExitError && rest != "" {
				t.Errorf("run error printed more than one line: %q", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty on error: %q", r.stdout)
			}
		})
	}
}

// TestDemoDownNothing: --down of a prefix no demo recorded removes nothing
// and says so (exit 0); it needs no root, as it only reads the state file.
func TestDemoDownNothing(t *testing.T) {
	prefix := fmt.Sprintf("zzq%d", os.Getpid())
	r := romana(t, nil, "", "demo", "--down", "--prefix", prefix)
	want := fmt.Sprintf("no demo with prefix %s to take down (no state file %s); nothing removed\n", prefix, filepath.Join(os.TempDir(), "romana-demo-"+prefix+".state"))
	if r.code != ExitOK || r.stdout != want || r.stderr != "" {
		t.Errorf("demo --down --prefix %s: exit %d, stdout %q, stderr %q; want %q", prefix, r.code, r.stdout, r.stderr, want)
	}
}

// TestHelp: every command has a description and examples, and --help works
// with exit code 0.
func TestHelp(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" || c.Parent() != nil && c.Parent().Name() == "completion" {
			return
		}
		if c.Short == "" {
			t.Errorf("%s has no Short description", c.CommandPath())
		}
		if c.Runnable() && !c.HasSubCommands() && c.Example == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(NewRoot())

	r := romana(t, nil, "", "network", "add", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "--field host=8") {
		t.Errorf("network add --help: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = romana(t, nil, "", "network")
	if r.code != 0 || !strings.Contains(r.stdout, "Available Commands:") {
		t.Errorf("romana network: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = romana(t, nil, "", "--help")
	for _, want := range []string{"ROMANA_SERVER", "ROMANA_CONFIG", "/etc/romana/admin.conf", "unix:///run/romana/romanad.sock", "--config"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("romana --help does not mention %s: exit %d\n%s", want, r.code, r.stdout)
		}
	}
}

package cli

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// cliSession runs romana in-process against one romanad.
type cliSession struct {
	t   *testing.T
	env map[string]string
}

// adminSession is a session that connects to srv over mutual TLS with an
// admin credential file named by ROMANA_CONFIG (its server is srv.URL).
func adminSession(t *testing.T, srv *servertest.Instance) cliSession {
	t.Helper()
	return cliSession{t: t, env: map[string]string{EnvConfig: srv.WriteCredential(t, pki.Admin, t.TempDir())}}
}

func (s cliSession) run(stdin string, args ...string) result {
	s.t.Helper()
	return romana(s.t, s.env, stdin, args...)
}

// ok runs a command that must succeed and returns its stdout.
func (s cliSession) ok(args ...string) string {
	s.t.Helper()
	r := s.run("", args...)
	if r.code != ExitOK || r.stderr != "" {
		s.t.Fatalf("romana %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// okJSON runs a command with -o json and decodes its output into v.
func (s cliSession) okJSON(v any, args ...string) {
	s.t.Helper()
	out := s.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		s.t.Fatalf("romana %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs a command that must fail with exit code 1 and the API's own
// message, which apiErr gets by making the same request with the Go client.
func (s cliSession) fails(apiErr error, args ...string) {
	s.t.Helper()
	if apiErr == nil {
		s.t.Fatalf("the client request behind romana %s succeeded; want an error", strings.Join(args, " "))
	}
	r := s.run("", args...)
	want := "Error: " + apiErr.Error() + "\n"
	if r.code != ExitError || r.stderr != want || r.stdout != "" {
		s.t.Errorf("romana %s: exit %d, stderr %q, stdout %q; want exit 1, stderr %q",
			strings.Join(args, " "), r.code, r.stderr, r.stdout, want)
	}
}

// TestEndToEnd drives a real romanad (embedded store) through the CLI.
func TestEndToEnd(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)

	// Networks: one flat, one with a rack level from a YAML file on stdin.
	out := s.ok("network", "add", "main", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4")
	if !strings.Contains(out, "main  10.0.0.0/8  host 8 | tenant 8 | segment 4 | endpoint 4  (any)") {
		t.Errorf("network add output:\n%s", out)
	}
	r := s.run("name: dc1\ncidr: 172.16.0.0/12\nfields:\n- {name: rack, bits: 4}\n- {name: host, bits: 6}\n- {name: tenant, bits: 6}\n- {name: segment, bits: 2}\ntenants: [globex]\n",
		"network", "add", "-f", "-")
	if r.code != ExitOK {
		t.Fatalf("network add -f -: exit %d: %s", r.code, r.stderr)
	}
	var nets []api.Network
	s.okJSON(&nets, "network", "list")
	if len(nets) != 2 || nets[0].Name != "dc1" || nets[1].Name != "main" || !slices.Equal(nets[0].Tenants, []string{"globex"}) {
		t.Errorf("network list: %+v", nets)
	}
	if out := s.ok("network", "show", "dc1"); !strings.Contains(out, "rack groups                     16") {
		t.Errorf("network show dc1:\n%s", out)
	}
	// romana plan --network prints what the offline plan prints.
	online := s.ok("plan", "--network", "main", "--host-loc", "1", "--tenant", "1", "--segment", "1", "--endpoint", "11")
	offline := s.ok("plan", "--name", "main", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4",
		"--host-loc", "1", "--tenant", "1", "--segment", "1", "--endpoint", "11")
	if online != offline {
		t.Errorf("plan --network main differs from the offline plan:\n%s\n---\n%s", online, offline)
	}

	// Bad networks: overlapping, not fitting. The CLI prints the API's message.
	_, err := c.AddNetwork(ctx, api.Network{Name: "overlap", CIDR: "10.128.0.0/9", Fields: []plan.Field{{Name: "host", Bits: 7}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 4}}})
	s.fails(err, "network", "add", "overlap", "--cidr", "10.128.0.0/9", "--field", "host=7", "--field", "tenant=8", "--field", "segment=4")
	_, err = c.AddNetwork(ctx, api.Network{Name: "big", CIDR: "192.168.0.0/16", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 4}}})
	s.fails(err, "network", "add", "big", "--cidr", "192.168.0.0/16", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4")
	_, err = c.GetNetwork(ctx, "nope")
	s.fails(err, "network", "show", "nope")

	// Hosts, tenants, segments.
	s.ok("host", "add", "h1", "--ip", "192.168.1.11", "--label", "rack=r1")
	s.ok("host", "add", "h2", "--ip", "192.168.1.12", "--label", "rack=r2")
	var hosts []api.Host
	s.okJSON(&hosts, "host", "list")
	if len(hosts) != 2 || hosts[0].Name != "h1" || hosts[1].Name != "h2" {
		t.Fatalf("host list: %+v", hosts)
	}
	_, err = c.AddHost(ctx, api.Host{Name: "Bad_Name", IP: netip.MustParseAddr("192.168.1.13")})
	s.fails(err, "host", "add", "Bad_Name", "--ip", "192.168.1.13")

	s.ok("tenant", "add", "acme")
	s.ok("tenant", "add", "globex", "--isolation", "segment")
	var tenants []api.Tenant
	s.okJSON(&tenants, "tenant", "list")
	if len(tenants) != 2 || tenants[0].Name != "acme" || tenants[1].Isolation != "segment" {
		t.Fatalf("tenant list: %+v", tenants)
	}
	s.ok("segment", "add", "acme", "web")
	s.ok("segment", "add", "acme", "db")
	s.ok("segment", "add", "globex", "api")
	_, err = c.AddSegment(ctx, api.Segment{Tenant: "nosuch", Name: "web"})
	s.fails(err, "segment", "add", "nosuch", "web")
	var segs []api.Segment
	s.okJSON(&segs, "segment", "list", "acme")
	if len(segs) != 2 || segs[0].Name != "db" || segs[1].Name != "web" {
		t.Fatalf("segment list acme: %+v", segs)
	}
	if out := s.ok("segment", "list"); strings.Count(out, "\n") != 4 {
		t.Errorf("segment list (all): want a header and 3 rows:\n%s", out)
	}

	// Allocate and check every address decodes to what was asked for.
	mainPlan, err := plan.Parse(nets[1].Spec())
	if err != nil {
		t.Fatal(err)
	}
	type ask struct{ name, host, tenant, segment string }
	asks := []ask{{"web-1", "h1", "acme", "web"}, {"web-2", "h1", "acme", "web"}, {"db-1", "h2", "acme", "db"}, {"web-3", "h2", "acme", "web"}}
	ips := map[string]netip.Addr{}
	for _, a := range asks {
		var got api.Address
		s.okJSON(&got, "address", "allocate", a.name, "--host", a.host, "--tenant", a.tenant, "--segment", a.segment, "--network", "main")
		if got.Name != a.name || got.Host != a.host || got.Tenant != a.tenant || got.Segment != a.segment || got.Network != "main" {
			t.Errorf("allocate %v: %+v", a, got)
		}
		h, _ := c.GetHost(ctx, a.host)
		tn, _ := c.GetTenant(ctx, a.tenant)
		sg, _ := c.GetSegment(ctx, a.tenant, a.segment)
		d, err := mainPlan.Decode(got.IP)
		if err != nil {
			t.Fatal(err)
		}
		var loc plan.Loc
		for _, sl := range h.Slots {
			if sl.Network == "main" {
				loc = sl.Loc
			}
		}
		if !reflectEqualLoc(d.Loc, loc) || d.Tenant != tn.ID || d.Segment != sg.ID {
			t.Errorf("%s = %s decodes to %+v; want host %s (loc %s) tenant %d segment %d", a.name, got.IP, d, a.host, loc, tn.ID, sg.ID)
		}
		ips[a.name] = got.IP
	}
	// The rack network: globex only, hosts placed by their rack label.
	if len(hosts[0].Slots) != 2 || len(hosts[1].Slots) != 2 {
		t.Errorf("hosts not placed in both networks: %+v", hosts)
	}
	_, err = c.Allocate(ctx, api.AddressRequest{Name: "g-1", Host: "h2", Tenant: "globex", Segment: "api"})
	s.fails(err, "address", "allocate", "g-1", "--host", "h2", "--tenant", "globex", "--segment", "api")
	var g1 api.Address
	s.okJSON(&g1, "address", "allocate", "g-1", "--host", "h2", "--tenant", "globex", "--segment", "api", "--network", "dc1")
	var g1d api.DecodedAddress
	s.okJSON(&g1d, "address", "decode", g1.IP.String())
	h2, _ := c.GetHost(ctx, "h2")
	var h2dc1 api.HostSlot
	for _, sl := range h2.Slots {
		if sl.Network == "dc1" {
			h2dc1 = sl
		}
	}
	if g1d.Network != "dc1" || g1d.Host != "h2" || !reflectEqualLoc(g1d.Loc, h2dc1.Loc) || len(g1d.Loc.Groups) != 1 || !h2dc1.CIDR.Contains(g1.IP) {
		t.Errorf("g-1 %s decodes to %+v; h2 in dc1 is %+v", g1.IP, g1d, h2dc1)
	}
	s.ok("address", "release", "g-1")

	// Idempotent by name.
	var again api.Address
	s.okJSON(&again, "address", "allocate", "web-1", "--host", "h1", "--tenant", "acme", "--segment", "web")
	if again.IP != ips["web-1"] {
		t.Errorf("allocating web-1 again gave %s, first %s", again.IP, ips["web-1"])
	}
	// Unknown tenant, unknown segment.
	_, err = c.Allocate(ctx, api.AddressRequest{Name: "x", Host: "h1", Tenant: "nosuch", Segment: "web"})
	s.fails(err, "address", "allocate", "x", "--host", "h1", "--tenant", "nosuch", "--segment", "web")
	_, err = c.Allocate(ctx, api.AddressRequest{Name: "x", Host: "h1", Tenant: "acme", Segment: "nosuch", Network: "main"})
	s.fails(err, "address", "allocate", "x", "--host", "h1", "--tenant", "acme", "--segment", "nosuch", "--network", "main")

	// List, sorted by IP, with filters.
	out = s.ok("address", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("address list:\n%s", out)
	}
	var listed []api.Address
	s.okJSON(&listed, "address", "list")
	if !slices.IsSortedFunc(listed, func(a, b api.Address) int { return a.IP.Compare(b.IP) }) || len(listed) != 4 {
		t.Errorf("address list -o json not sorted by IP or wrong length: %+v", listed)
	}
	var onH2 []api.Address
	s.okJSON(&onH2, "address", "list", "--host", "h2")
	if len(onH2) != 2 || onH2[0].Host != "h2" || onH2[1].Host != "h2" {
		t.Errorf("address list --host h2: %+v", onH2)
	}
	var dbs []api.Address
	s.okJSON(&dbs, "address", "list", "--tenant", "acme", "--segment", "db")
	if len(dbs) != 1 || dbs[0].Name != "db-1" {
		t.Errorf("address list --tenant acme --segment db: %+v", dbs)
	}

	// Decode: names resolved.
	var dec api.DecodedAddress
	s.okJSON(&dec, "address", "decode", ips["db-1"].String())
	if dec.Host != "h2" || dec.Tenant != "acme" || dec.Segment != "db" || dec.Allocation != "db-1" || dec.Network != "main" {
		t.Errorf("decode %s: %+v", ips["db-1"], dec)
	}
	out = s.ok("address", "decode", ips["db-1"].String())
	if !strings.Contains(out, "Allocated to:  db-1") || !strings.Contains(out, "Segment:       db (id") {
		t.Errorf("decode table:\n%s", out)
	}
	_, err = c.Decode(ctx, netip.MustParseAddr("192.0.2.1"))
	s.fails(err, "address", "decode", "192.0.2.1")

	// Policies from a YAML list on stdin; create or update by name.
	policies := `- name: web-from-lb
  direction: [ingress]
  appliedTo: [{tenant: acme, segment: web}]
  rules:
  - peers: [{cidr: 192.168.0.0/24}]
    protocol: tcp
    ports: [80, 443]
- name: db-from-web
  priority: 100
  direction: [ingress]
  appliedTo: [{tenant: acme, segment: db}]
  rules:
  - peers: [{tenant: acme, segment: web}]
    protocol: tcp
    ports: [5432]
`
	if r := s.run(policies, "policy", "add", "-f", "-"); r.code != ExitOK {
		t.Fatalf("policy add: exit %d: %s", r.code, r.stderr)
	}
	if r := s.run("name: web-from-lb\ndescription: updated\ndirection: [ingress]\nappliedTo: [{tenant: acme, segment: web}]\nrules: [{protocol: tcp, ports: [8080]}]\n",
		"policy", "add", "-f", "-"); r.code != ExitOK {
		t.Fatalf("policy add (update): exit %d: %s", r.code, r.stderr)
	}
	var ps []api.Policy
	s.okJSON(&ps, "policy", "list")
	if len(ps) != 2 || ps[0].Name != "db-from-web" || ps[1].Name != "web-from-lb" || ps[1].Description != "updated" {
		t.Errorf("policy list: %+v", ps)
	}
	if out := s.ok("policy", "show", "web-from-lb"); !strings.Contains(out, "- 8080") {
		t.Errorf("policy show:\n%s", out)
	}
	r = s.run("name: bad\ndirection: [sideways]\nappliedTo: [{all: true}]\nrules: []\n", "policy", "add", "-f", "-")
	_, err = c.PutPolicy(ctx, api.Policy{Name: "bad", Direction: []string{"sideways"}, AppliedTo: []api.Selector{{All: true}}, Rules: []api.Rule{}})
	if r.code != ExitError || err == nil || r.stderr != "Error: "+err.Error()+"\n" {
		t.Errorf("bad policy: exit %d, stderr %q; API error %v", r.code, r.stderr, err)
	}
	r = s.run(`[{"name":"good","direction":["egress"],"appliedTo":[{"all":true}],"rules":[{"action":"deny"}]},
		{"name":"bad","direction":["sideways"],"appliedTo":[{"all":true}],"rules":[]}]`, "policy", "add", "-f", "-")
	if want := "Error: policy bad (2 of 2; the ones before it were saved): " + err.Error() + "\n"; r.code != ExitError || r.stderr != want {
		t.Errorf("list with a bad policy: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
	s.ok("policy", "show", "good")
	s.ok("policy", "remove", "good")
	s.ok("policy", "remove", "db-from-web")

	// Release by name and by IP; twice is harmless (exit 0) and says that
	// nothing was released.
	if out := s.ok("address", "release", "web-1"); out != "address web-1 ("+ips["web-1"].String()+") released\n" {
		t.Errorf("release web-1: %q", out)
	}
	if out := s.ok("address", "release", "web-1"); out != "address web-1 is not allocated; nothing released\n" {
		t.Errorf("release web-1 again: %q", out)
	}
	if out := s.ok("address", "release", "nosuch"); out != "address nosuch is not allocated; nothing released\n" {
		t.Errorf("release nosuch: %q", out)
	}
	if out := s.ok("address", "release", "--ip", ips["web-2"].String()); out != "address "+ips["web-2"].String()+" (web-2) released\n" {
		t.Errorf("release --ip web-2: %q", out)
	}
	if out := s.ok("address", "release", "--ip", ips["web-2"].String()); out != "address "+ips["web-2"].String()+" is not allocated; nothing released\n" {
		t.Errorf("release --ip web-2 again: %q", out)
	}
	if out := s.ok("address", "release", "--ip", "203.0.113.9"); out != "address 203.0.113.9 is not allocated (it is in no network); nothing released\n" {
		t.Errorf("release --ip outside every network: %q", out)
	}
	if out := s.ok("address", "release", "nosuch", "-o", "json"); out != "" {
		t.Errorf("release -o json printed %q", out)
	}
	s.okJSON(&listed, "address", "list")
	if len(listed) != 2 {
		t.Errorf("after releasing two of four: %+v", listed)
	}
	// A network with addresses cannot be removed.
	err = c.RemoveNetwork(ctx, "main")
	s.fails(err, "network", "remove", "main")

	// Over the unix socket too.
	us := cliSession{t: t, env: map[string]string{EnvServer: "unix://" + srv.Socket}}
	us.okJSON(&listed, "address", "list")
	if len(listed) != 2 {
		t.Errorf("address list over the unix socket: %+v", listed)
	}
	us.ok("address", "release", "db-1")
	us.ok("address", "release", "web-3")
	for _, cmd := range [][]string{{"segment", "remove", "acme", "web"}, {"segment", "remove", "acme", "db"}, {"segment", "remove", "globex", "api"},
		{"tenant", "remove", "acme"}, {"tenant", "remove", "globex"}, {"host", "remove", "h1"}, {"host", "remove", "h2"},
		{"network", "remove", "main"}, {"network", "remove", "dc1"}, {"policy", "remove", "web-from-lb"}} {
		if out := s.ok(cmd...); !strings.HasSuffix(out, " removed\n") && !strings.HasSuffix(out, " revoked\n") {
			t.Errorf("romana %s: %q", strings.Join(cmd, " "), out)
		}
	}
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Networks)+len(snap.Hosts)+len(snap.Tenants)+len(snap.Segments)+len(snap.Addresses)+len(snap.Policies) != 0 {
		t.Errorf("state not empty after removing everything: %+v", snap)
	}
	if out := s.ok("network", "list", "-o", "json"); out != "[]\n" {
		t.Errorf("empty network list as JSON: %q", out)
	}
}

func reflectEqualLoc(a, b plan.Loc) bool {
	return a.Host == b.Host && slices.Equal(a.Groups, b.Groups)
}

// TestEmptyLists: an empty list prints a line saying so in table mode
// (not a lone header), and [] in JSON.
func TestEmptyLists(t *testing.T) {
	srv := servertest.Start(t)
	s := adminSession(t, srv)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "list"}, "no networks\n"},
		{[]string{"host", "list"}, "no hosts\n"},
		{[]string{"tenant", "list"}, "no tenants\n"},
		{[]string{"segment", "list"}, "no segments\n"},
		{[]string{"address", "list"}, "no addresses allocated\n"},
		{[]string{"address", "list", "--host", "h1", "--tenant", "acme"}, "no addresses match --host h1 --tenant acme\n"},
		{[]string{"policy", "list"}, "no policies\n"},
		{[]string{"device", "list"}, "no devices\n"},
		{[]string{"chain", "list"}, "no chains\n"},
	} {
		if out := s.ok(tc.args...); out != tc.want {
			t.Errorf("romana %s: %q, want %q", strings.Join(tc.args, " "), out, tc.want)
		}
		if out := s.ok(append(tc.args, "-o", "json")...); out != "[]\n" {
			t.Errorf("romana %s -o json: %q, want []", strings.Join(tc.args, " "), out)
		}
	}
	s.ok("tenant", "add", "acme")
	if out := s.ok("segment", "list", "acme"); out != "tenant acme has no segments\n" {
		t.Errorf("segment list acme: %q", out)
	}
}

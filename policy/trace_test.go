package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// traceSnap: net1 10.0.0.0/8 (host 8 | tenant 4 | segment 4 | endpoint 8),
// hosts h1..h3, tenants acme (tenant mode), beta (segment mode: web, db),
// open (none); address sets s1 and s2 of endpoints (and s2 of an
// underlay address and one outside every block).
func traceSnap(t *testing.T, ps ...api.Policy) api.Snapshot {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	snap := api.Snapshot{Networks: []api.Network{n}, Policies: ps,
		Tenants: []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2, Isolation: "segment"}, {Name: "open", ID: 3, Isolation: "none"}},
		Segments: []api.Segment{{Tenant: "acme", Name: "default"}, {Tenant: "beta", Name: "web"}, {Tenant: "beta", Name: "db", ID: 1},
			{Tenant: "open", Name: "default"}},
		AddressSets: []api.AddressSet{
			{Name: "s1", Addresses: addrs("10.1.16.7", "10.2.32.7", "10.2.33.7", "10.3.48.7")},
			{Name: "s2", Addresses: addrs("10.1.32.7", "10.3.16.7", "10.200.0.1", "192.168.0.2")}}}
	for i := 1; i <= 3; i++ {
		snap.Hosts = append(snap.Hosts, api.Host{Name: "h" + string(rune('0'+i)), IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: uint64(i)}, CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)}}})
	}
	return snap
}

// Addresses: 10.<host>.<tenant<<4|segment>.<ep>.
func TestTrace(t *testing.T) {
	u8 := func(v uint8) *uint8 { return &v }
	snap := traceSnap(t,
		api.Policy{Name: "acme-to-web", Priority: 100, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{
				{Action: "deny", Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{22}},
				{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", PortRanges: []string{"8000-8080"}},
				{Peers: []api.Peer{{Host: "h3"}}, Protocol: "icmp", ICMPType: u8(8)},
			}},
		api.Policy{Name: "block-db", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{CIDR: "10.0.0.0/8", Except: []string{"10.0.0.0/9"}}}}}},
		api.Policy{Name: "low-allow", Priority: 2000, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Peers: []api.Peer{{Any: true}}, Protocol: "udp", Ports: []uint16{53}}}},
	)
	a1, w2, d3, o1 := "10.1.16.1", "10.2.32.1", "10.3.33.1", "10.1.48.1"
	cases := []struct {
		from, to, proto string
		port            uint16
		verdict, by     string
	}{
		{a1, w2, "tcp", 8080, "allow", "policy acme-to-web rule 1"},
		{a1, w2, "tcp", 22, "deny", "policy acme-to-web rule 0"},
		{a1, w2, "tcp", 9000, "deny", "segment isolation of beta/web"}, // web only from web
		{d3, w2, "icmp", 0, "allow", "policy acme-to-web rule 2"},      // h3's block, echo request
		{o1, w2, "udp", 53, "allow", "policy low-allow rule 0"},
		{a1, "10.200.0.1", "tcp", 80, "deny", "policy block-db rule 0"},
		{a1, "10.100.0.1", "tcp", 80, "allow", "no ingress enforcement"},
		{a1, o1, "tcp", 80, "allow", "tenant isolation of open: none"},
		{o1, a1, "tcp", 80, "deny", "tenant isolation of acme"},
		{a1, "10.2.16.9", "tcp", 80, "allow", "tenant isolation of acme: same tenant"},
	}
	for _, c := range cases {
		p := Packet{Src: netip.MustParseAddr(c.from), Dst: netip.MustParseAddr(c.to), Proto: c.proto, Port: c.port, ICMPType: 8}
		tr, err := Trace(snap, p)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Verdict != c.verdict || !strings.Contains(tr.Decision.Reason, c.by) {
			t.Errorf("%s -> %s %s/%d: %s by %q (steps %+v), want %s by %q", c.from, c.to, c.proto, c.port, tr.Verdict, tr.Decision.Reason, tr.Steps, c.verdict, c.by)
		}
	}
	if _, err := Trace(snap, Packet{Src: netip.MustParseAddr(a1), Dst: netip.MustParseAddr(w2), Proto: "tcp"}); api.ReasonOf(err) != api.ReasonInvalid {
		t.Errorf("tcp without port: %v", err)
	}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// Trace names the tier of a decision outside the default tier and lists
// each pass as a step; a set it does not hold is empty and reported.
func TestTraceTiers(t *testing.T) {
	snap := traceSnap(t,
		api.Policy{Name: "admin-web", Tier: api.TierAdmin, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta"}},
			Rules: []api.Rule{{Action: "pass", Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{80}},
				{Action: "deny", Protocol: "tcp", Ports: []uint16{80, 22}}}},
		api.Policy{Name: "web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Set: "s1"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{80}},
				{Action: "pass", Peers: []api.Peer{{Set: "s2"}}}}},
		api.Policy{Name: "floor", Tier: api.TierBaseline, Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: "pass", Peers: []api.Peer{{Set: "missing"}}}, {Peers: []api.Peer{{Set: "s2"}}}, {Action: "deny", Protocol: "udp"}}},
	)
	a1, w2 := "10.1.16.1", "10.2.32.7" // w2 in s1
	for _, c := range []struct {
		from, to, proto string
		port            uint16
		verdict, by     string
		passes          int
	}{
		{a1, w2, "tcp", 80, "allow", "policy web rule 0: allow", 1},
		{a1, "10.2.32.8", "tcp", 80, "deny", "segment isolation of beta/web", 1}, // not in s1
		{"10.1.32.7", w2, "tcp", 80, "deny", "policy admin-web rule 1 (tier admin): deny", 0},
		{"10.3.16.7", w2, "tcp", 443, "allow", "policy floor rule 1 (tier baseline): allow", 1}, // s2: passed by web
		{a1, "10.1.16.2", "udp", 53, "deny", "policy floor rule 2 (tier baseline): deny", 0},    // egress baseline
	} {
		p := Packet{Src: netip.MustParseAddr(c.from), Dst: netip.MustParseAddr(c.to), Proto: c.proto, Port: c.port}
		tr, err := Trace(snap, p)
		if err != nil {
			t.Fatal(err)
		}
		passes := 0
		for _, s := range tr.Steps {
			if s.Result == api.ActionPass && s.Policy != "" {
				passes++
			}
		}
		if tr.Verdict != c.verdict || !strings.Contains(tr.Decision.Reason, c.by) || passes != c.passes {
			t.Errorf("%s -> %s %s/%d: %s by %q, %d passes (steps %+v), want %s by %q, %d passes", c.from, c.to, c.proto, c.port,
				tr.Verdict, tr.Decision.Reason, passes, tr.Steps, c.verdict, c.by, c.passes)
		}
	}
	c := Compile(snap, "h2")
	if !strings.Contains(strings.Join(c.Problems, "\n"), `address set "missing" does not exist`) {
		t.Errorf("problems %q", c.Problems)
	}
}

package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// traceSnap6 is traceSnap with a second network, IPv6 on a /48 ULA with
// the same fields, in which every host has a /56.
func traceSnap6(t *testing.T, ps ...api.Policy) api.Snapshot {
	snap := traceSnap(t, ps...)
	n6 := api.Network{Name: "net6", CIDR: "fd00:1234:5678::/48", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	snap.Networks = append(snap.Networks, n6)
	for i := range snap.Hosts {
		c := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0x12, 0x34, 0x56, 0x78, byte(i + 1)}), 56)
		snap.Hosts[i].IP6 = netip.AddrFrom16([16]byte{0xfd, 0x77, 15: byte(i + 1)})
		snap.Hosts[i].Slots = append(snap.Hosts[i].Slots, api.HostSlot{Network: "net6", Loc: plan.Loc{Host: uint64(i + 1)}, CIDR: c})
	}
	return snap
}

// Over IPv6, "icmp" in a policy is ICMPv6 (echo request is type 128, not
// 8), "icmpv6" is accepted as its name, and isolation decides by the same
// tenant and segment fields as over IPv4.
func TestTraceV6(t *testing.T) {
	u8 := func(v uint8) *uint8 { return &v }
	snap := traceSnap6(t,
		api.Policy{Name: "acme-to-web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{8081}}}},
		api.Policy{Name: "h1-to-db", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "db"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Host: "h1"}}, Protocol: "tcp", Ports: []uint16{5432}}}},
		api.Policy{Name: "open-pings-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "open"}}, Protocol: "icmp", ICMPType: u8(128)}}},
	)
	// fd00:1234:5678:<host><tenant><segment>::<ep>
	a1, a2, w2, d3, o1 := "fd00:1234:5678:110::1", "fd00:1234:5678:210::1", "fd00:1234:5678:220::1", "fd00:1234:5678:321::1", "fd00:1234:5678:130::1"
	cases := []struct {
		from, to, proto string
		port            uint16
		icmp            uint8
		verdict, by     string
	}{
		{a1, w2, "tcp", 8081, 0, "allow", "policy acme-to-web rule 0"},
		{a1, w2, "tcp", 22, 0, "deny", "segment isolation of beta/web"},
		{o1, a2, "icmp", 0, 128, "allow", "policy open-pings-acme rule 0"},
		{o1, a2, "icmpv6", 0, 128, "allow", "policy open-pings-acme rule 0"},
		{o1, a2, "icmpv6", 0, 8, "deny", "tenant isolation of acme"},
		{a1, a2, "icmpv6", 0, 128, "allow", "tenant isolation of acme: same tenant"},
		{w2, d3, "tcp", 80, 0, "deny", "segment isolation of beta/db"},
		{a2, o1, "tcp", 80, 0, "allow", "tenant isolation of open: none"},
		// A host peer is its blocks and its underlay address of the family: ip6.
		{a1, d3, "tcp", 5432, 0, "allow", "policy h1-to-db rule 0"},
		{"fd77::1", d3, "tcp", 5432, 0, "allow", "policy h1-to-db rule 0"},
		{"fd77::2", d3, "tcp", 5432, 0, "deny", "segment isolation of beta/db"},
	}
	for _, c := range cases {
		p := Packet{Src: netip.MustParseAddr(c.from), Dst: netip.MustParseAddr(c.to), Proto: c.proto, Port: c.port, ICMPType: c.icmp}
		tr, err := Trace(snap, p)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Verdict != c.verdict || !strings.Contains(tr.Decision.Reason, c.by) {
			t.Errorf("%s -> %s %s/%d/%d: %s by %q (steps %+v), want %s by %q", c.from, c.to, c.proto, c.port, c.icmp, tr.Verdict, tr.Decision.Reason, tr.Steps, c.verdict, c.by)
		}
	}
	if _, err := Trace(snap, Packet{Src: netip.MustParseAddr("10.1.16.1"), Dst: netip.MustParseAddr("10.2.32.1"), Proto: "icmpv6"}); api.ReasonOf(err) != api.ReasonInvalid {
		t.Errorf("icmpv6 between IPv4 addresses: %v", err)
	}
}

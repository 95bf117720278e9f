package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

// A trace between an endpoint and a host's own address: to its own host
// (met in that host's input hook) and to another host (the forward hook)
// the source's egress stage decides, and the last step names the host;
// from a host's own address to its own endpoint it is allowed (output
// hook), to another host's endpoint the destination's stages decide.
func TestTraceHostAddresses(t *testing.T) {
	snap := traceSnap6(t,
		api.Policy{Name: "acme-no-hosts", Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{CIDR: "192.168.0.0/24"}, {CIDR: "fd77::/64"}}, Protocol: "tcp"}}},
		api.Policy{Name: "acme-to-h1", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Host: "h1"}}, Protocol: "tcp", Ports: []uint16{22}}}},
	)
	// 10.<host>.<tenant<<4|segment>.<ep>; fd00:1234:5678:<host><tenant><segment>::<ep>
	a1, a2, w1 := "10.1.16.1", "10.2.16.1", "10.1.32.1"
	a1v6 := "fd00:1234:5678:110::1"
	cases := []struct {
		from, to       string
		port           uint16
		verdict, host  string
		reason, policy string
	}{
		{a1, "192.168.0.1", 80, "deny", "h1", "", "acme-no-hosts"},
		{a1, "192.168.0.1", 22, "allow", "h1", "the source's own: egress policies applied in its input hook", ""},
		{a1, "192.168.0.2", 80, "deny", "h1", "", "acme-no-hosts"},
		{a1, "192.168.0.2", 22, "deny", "h1", "", "acme-no-hosts"}, // h1's address only
		{a2, "192.168.0.1", 22, "allow", "h1", "not an endpoint's", ""},
		{w1, "192.168.0.1", 80, "allow", "h1", "the source's own", ""},
		{a1, "169.254.1.1", 80, "allow", "h1", "the source's own", ""},
		{a1v6, "fd77::1", 80, "deny", "h1", "", "acme-no-hosts"},
		{a1v6, "fd77::1", 22, "allow", "h1", "the source's own", ""},
		{a1v6, "fe80::1", 80, "allow", "h1", "the source's own", ""},
		{"192.168.0.1", a1, 80, "allow", "h1", "output hook", ""},
		{"fd77::1", a1v6, 80, "allow", "h1", "output hook", ""},
		{"192.168.0.2", a1, 80, "deny", "h1", "tenant isolation of acme", ""},
	}
	for _, c := range cases {
		tr, err := Trace(snap, Packet{Src: netip.MustParseAddr(c.from), Dst: netip.MustParseAddr(c.to), Proto: "tcp", Port: c.port})
		if err != nil {
			t.Fatal(err)
		}
		d := tr.Decision
		if tr.Verdict != c.verdict || d.Host != c.host || !strings.Contains(d.Reason, c.reason) || d.Policy != c.policy {
			t.Errorf("%s -> %s:%d: %s on %q by %q (%s), want %s on %q by %q (%s)", c.from, c.to, c.port,
				tr.Verdict, d.Host, d.Policy, d.Reason, c.verdict, c.host, c.policy, c.reason)
		}
	}
}

package hoststate

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/policy"
)

// tierPolicies: an admin tier that denies SSH everywhere, quarantines an
// address set and passes web traffic from acme on to the default tier; a
// default tier allowing it, and a set of database clients to a set of
// primaries; a baseline tier closing the open tenant to TCP from outside
// it and denying SMTP out.
func tierPolicies() []api.Policy {
	return []api.Policy{
		{Name: "no-ssh", Tier: api.TierAdmin, Priority: 10, Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: "deny", Protocol: "tcp", Ports: []uint16{22}},
				{Action: "pass", Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{80}}}},
		{Name: "quarantine", Tier: api.TierAdmin, Priority: 20, Direction: []string{"ingress", "egress"},
			AppliedTo: []api.Selector{{Set: "quarantined"}},
			Rules:     []api.Rule{{Action: "deny"}}},
		{Name: "web-from-acme", Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules:     []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{80}}}},
		{Name: "db-clients", Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Tenant: "beta", Segment: "db", Set: "db-primary"}},
			Rules:     []api.Rule{{Peers: []api.Peer{{Set: "db-clients"}, {Set: "gone"}}, Protocol: "tcp", Ports: []uint16{5432}}}},
		{Name: "open-closed", Tier: api.TierBaseline, Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Tenant: "open"}},
			Rules:     []api.Rule{{Peers: []api.Peer{{Tenant: "open"}}}, {Action: "deny", Protocol: "tcp"}}},
		{Name: "no-smtp-out", Tier: api.TierBaseline, Direction: []string{"egress"},
			AppliedTo: []api.Selector{{All: true}},
			Rules:     []api.Rule{{Action: "deny", Protocol: "tcp", Ports: []uint16{25}}}},
	}
}

func TestPolicyTiersGolden(t *testing.T) {
	l := demoLab(t)
	l.snap.Policies = tierPolicies()
	acme1, acme2 := l.address(1, 1, 0, 1).IP, l.address(2, 1, 0, 1).IP
	web1, db1, db1b := l.address(1, 2, 0, 1).IP, l.address(1, 2, 1, 1).IP, l.address(1, 2, 1, 2).IP
	open1, open2 := l.address(1, 3, 0, 1).IP, l.address(2, 3, 0, 1).IP
	quarantined := l.address(1, 1, 0, 2).IP
	l.snap.AddressSets = []api.AddressSet{
		{Name: "quarantined", Addresses: []netip.Addr{quarantined, netip.MustParseAddr("fd00::9")}},
		{Name: "db-primary", Addresses: []netip.Addr{db1}},
		{Name: "db-clients", Addresses: []netip.Addr{acme2, web1}},
	}
	st := l.compute("h1", ModeFlat)
	expect.Golden(t, "policies-tiers-h1.txt", st.String())
	nftCheck(t, st.Firewall)
	if p := strings.Join(st.Problems, "\n"); !strings.Contains(p, `policy "db-clients": address set "gone" does not exist`) {
		t.Errorf("missing set not reported: %q", st.Problems)
	}
	h2 := l.compute("h2", ModeFlat)

	for _, c := range []struct {
		what     string
		src, dst netip.Addr
		port     uint16
		want     string
	}{
		{"admin deny before any default allow", acme2, web1, 22, "drop"},
		{"admin pass, then the default tier allows", acme2, web1, 80, "accept"},
		{"no pass for others: beta/db to beta/web is segment-isolated", db1, web1, 80, "drop"},
		{"default tier allows a set to a set", web1, db1, 5432, "accept"},
		{"a db endpoint outside the primary set is isolated", web1, db1b, 5432, "drop"},
		{"a client outside the set is isolated", acme1, db1, 5432, "drop"},
		{"baseline denies what no default policy matched", acme1, open1, 80, "drop"},
		{"baseline allows the open tenant itself", open2, open1, 80, "accept"},
		{"baseline egress deny", acme1, open2, 25, "drop"},
		{"quarantined: ingress denied by admin", acme1, quarantined, 443, "drop"},
		{"quarantined: egress denied by admin", quarantined, acme1, 443, "drop"},
		{"same tenant otherwise", acme1, l.address(1, 1, 0, 3).IP, 443, "accept"},
	} {
		pk := packet{saddr: c.src, daddr: c.dst, proto: "tcp", port: c.port}
		got := evaluatePacket(t, st.Firewall, pk)
		if got == "accept" && !strings.HasPrefix(c.dst.String(), "10.1.") {
			got = evaluatePacket(t, h2.Firewall, pk)
		}
		tr, err := policy.Trace(l.snap, policy.Packet{Src: c.src, Dst: c.dst, Proto: "tcp", Port: c.port})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{api.ActionAllow: "accept", api.ActionDeny: "drop"}[tr.Verdict]
		if got != c.want || want != c.want {
			t.Errorf("%s: %s -> %s:%d: rulesets %s, trace %s (%s), want %s", c.what, c.src, c.dst, c.port, got, want, tr.Decision.Reason, c.want)
		}
	}

	// Without admin and baseline policies the chains are those of
	// before tiers: no suffix, no goto a next tier.
	l.snap.Policies = tierPolicies()[2:4]
	for _, ch := range l.compute("h1", ModeFlat).Firewall.Chains {
		if strings.Contains(ch.Name, "-admin") || strings.Contains(ch.Name, "-baseline") {
			t.Errorf("chain %s without admin or baseline policies", ch.Name)
		}
	}
}

// An egress allow ends the whole egress stage, in whatever tier: a later
// tier's egress deny does not see the packet (every step between the
// policies chain's jump and the verdict is a goto, so the allow's return
// goes back to the policies chain). A pass goes on to the next tier, and
// a pass in the last tier ends the stage without a verdict.
func TestEgressAllowEndsTheStageAcrossTiers(t *testing.T) {
	l := demoLab(t)
	acme1, acme2 := l.address(1, 1, 0, 1).IP, l.address(2, 1, 0, 1).IP
	l.snap.Policies = []api.Policy{
		{Name: "admin-out", Tier: api.TierAdmin, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Protocol: "tcp", Ports: []uint16{25}}, {Action: "pass", Protocol: "tcp", PortRanges: []string{"26-29"}},
				{Action: "deny", Protocol: "tcp", PortRanges: []string{"26-29"}}}},
		{Name: "default-out", Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Protocol: "tcp", Ports: []uint16{28}}, {Action: "pass", Protocol: "tcp", Ports: []uint16{27}}}},
		{Name: "floor-out", Tier: api.TierBaseline, Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: "pass", Protocol: "tcp", Ports: []uint16{27}}, {Action: "deny", Protocol: "tcp", PortRanges: []string{"25-27"}}}},
	}
	rs := l.compute("h1", ModeFlat).Firewall
	nftCheck(t, rs)
	// 25: admin allow; 26: baseline deny; 27: passed by every tier; 28:
	// default allow after an admin pass (the admin deny after the pass
	// never sees it); 29: passed, then no rule.
	for port, want := range map[uint16]string{25: "accept", 26: "drop", 27: "accept", 28: "accept", 29: "accept", 30: "accept"} {
		got := evaluatePacket(t, rs, packet{saddr: acme1, daddr: acme2, proto: "tcp", port: port})
		tr, err := policy.Trace(l.snap, policy.Packet{Src: acme1, Dst: acme2, Proto: "tcp", Port: port})
		if err != nil {
			t.Fatal(err)
		}
		if got != want || map[string]string{api.ActionAllow: "accept", api.ActionDeny: "drop"}[tr.Verdict] != want {
			t.Errorf("acme -> acme tcp %d: ruleset %s, trace %s (%s), want %s\n%s", port, got, tr.Verdict, tr.Decision.Reason, want, rs)
		}
	}
}

package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
)

// withSets computes h1's ruleset with policies of every tier that name
// address sets (as targets and peers), the sets holding members.
func withSets(t testing.TB, members map[string][]string) hoststate.Ruleset {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	snap := api.Snapshot{Networks: []api.Network{n}, Hosts: []api.Host{{Name: "h1", IP: netip.MustParseAddr("192.168.0.1"),
		Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: 1}, CIDR: netip.MustParsePrefix("10.1.0.0/16")}}}},
		Tenants: []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2}},
		Policies: []api.Policy{
			{Name: "quarantine", Tier: api.TierAdmin, Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{Set: "bad"}},
				Rules: []api.Rule{{Action: "deny"}}},
			{Name: "to-web", Tier: api.TierAdmin, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme", Set: "web"}},
				Rules: []api.Rule{{Action: "pass", Peers: []api.Peer{{Set: "clients"}}}}},
			{Name: "web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme", Set: "web"}},
				Rules: []api.Rule{{Peers: []api.Peer{{Set: "clients"}}, Protocol: "tcp", Ports: []uint16{80}}}},
			{Name: "rest", Tier: api.TierBaseline, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{All: true}},
				Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{Set: "clients"}}}}},
		}}
	for name, as := range members {
		s := api.AddressSet{Name: name}
		for _, a := range as {
			s.Addresses = append(s.Addresses, netip.MustParseAddr(a))
		}
		snap.AddressSets = append(snap.AddressSets, s)
	}
	st, err := hoststate.Compute(snap, "h1", hoststate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st.Firewall
}

// A change of address sets' members sends their elements only: no chain
// is flushed or written, whatever the tiers and sets the policies use;
// the rules stay as they were.
func TestAddressSetMembersTouchElementsOnly(t *testing.T) {
	fw, c := newCounting()
	a := map[string][]string{"bad": {"10.1.16.9"}, "web": {"10.1.16.1", "10.1.16.2"}, "clients": {"10.2.32.1", "10.3.32.1"}}
	first := apply(t, fw, c, withSets(t, a))
	if !strings.Contains(strings.Join(first, " "), "delete table") {
		t.Fatalf("first apply is no replacement: %q", first)
	}
	b := map[string][]string{"bad": nil, "web": {"10.1.16.2", "10.1.16.3"}, "clients": {"10.2.32.1", "10.3.32.1", "10.4.32.1"}}
	got := apply(t, fw, c, withSets(t, b))
	for _, op := range got {
		if !strings.HasPrefix(op, "add element as-") && !strings.HasPrefix(op, "delete element as-") {
			t.Fatalf("membership change: transaction %q touches more than address-set elements", got)
		}
	}
	if len(got) == 0 {
		t.Fatal("membership change: empty transaction")
	}
	tx := c.txs[len(c.txs)-2] // the delta, before the listing sums
	for _, want := range []string{"delete element inet romana as-bad-4 { 10.1.16.9 }", "delete element inet romana as-web-4 { 10.1.16.1 }",
		"add element inet romana as-web-4 { 10.1.16.3 }", "add element inet romana as-clients-4 { 10.4.32.1 }"} {
		if !strings.Contains(tx, want) {
			t.Errorf("transaction lacks %q:\n%s", want, tx)
		}
	}
	if d := c.Dump(); !strings.Contains(d, "10.4.32.1") || strings.Contains(d, "10.1.16.9") {
		t.Fatalf("table after the change:\n%s", d)
	}
}

// A tier's first policy and its last going are deltas: its chains are
// added or deleted, the chains that go to it rewritten, the table never
// replaced.
func TestTierAppearsAsDelta(t *testing.T) {
	fw, c := newCounting()
	web := api.Policy{Name: "web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{80}}}}
	floor := api.Policy{Name: "floor", Tier: api.TierBaseline, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{All: true}},
		Rules: []api.Rule{{Action: "deny", Protocol: "tcp"}}}
	admin := api.Policy{Name: "first", Tier: api.TierAdmin, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta"}},
		Rules: []api.Rule{{Action: "pass", Protocol: "tcp", Ports: []uint16{80}}}}
	steps := [][]api.Policy{{web}, {web, floor}, {web, floor, admin}, {web, admin}, {web}}
	apply(t, fw, c, withPolicies(t, steps[0]...))
	for i := 1; i < len(steps); i++ {
		a, b := withPolicies(t, steps[i-1]...), withPolicies(t, steps[i]...)
		got := apply(t, fw, c, b)
		if slices.Contains(got, "delete table") {
			t.Fatalf("step %d: table replaced: %q", i, got)
		}
		inOrder(t, fmt.Sprintf("step %d", i), a, b, got)
	}
}

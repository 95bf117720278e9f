package firewall

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim/simtest"
)

// steering computes h1's steering for a two-hop chain whose first function
// is on h1 and second on h2, and a port-filtered chain.
func steering(t *testing.T, withChains bool) hoststate.Steering {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		t.Fatal(err)
	}
	snap := api.Snapshot{Networks: []api.Network{n},
		Tenants:  []api.Tenant{{Name: "acme", ID: 1}, {Name: "infra", ID: 2, Isolation: api.IsolationNone}},
		Segments: []api.Segment{{Tenant: "acme", Name: "web"}, {Tenant: "infra", Name: "fw"}}}
	for i := uint64(1); i <= 2; i++ {
		c, _ := p.HostCIDR(plan.Loc{Host: i})
		snap.Hosts = append(snap.Hosts, api.Host{Name: "h" + string(rune('0'+i)), IP: netip.AddrFrom4([4]byte{192, 168, 61, byte(i)}),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: i}, CIDR: c}}})
	}
	var via []netip.Addr
	for i := uint64(1); i <= 2; i++ {
		ip, _ := p.Address(plan.Loc{Host: i}, 2, 0, 1)
		h := "h" + string(rune('0'+i))
		snap.Addresses = append(snap.Addresses, api.Address{Name: "fw" + h, IP: ip, Network: "net1", Host: h, Tenant: "infra", Segment: "fw", Interface: "rv-fw"})
		via = append(via, ip)
	}
	if withChains {
		snap.Chains = []api.Chain{
			{Name: "two", ID: 1, Tenant: "acme", Segment: "web", ToTenant: "infra", Via: via},
			{Name: "web", ID: 2, Tenant: "acme", Segment: "web", ToCIDR: netip.MustParsePrefix("10.2.0.0/16"), Proto: "tcp", Port: 80, Via: via[1:], Failure: api.FailClosed},
		}
	}
	st, err := hoststate.ComputeSteering(snap, "h2", nil)
	if err != nil || len(st.Problems) > 0 {
		t.Fatal(err, st.Problems)
	}
	return st
}

// The steering adapter against the kernel in a simulated host: applies,
// reads back as in sync, repairs damage, deletes the table when no chain
// concerns the host, and never touches another table.
func TestSteerInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.61.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	var fw *Firewall
	var s *Steer
	if err := h.Do(func() (err error) {
		if fw, err = New(nil); err != nil {
			return err
		}
		s, err = NewSteer(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rs := ruleset(t, "acme", "")
	if err := h.Do(func() error { _, err := fw.Apply(ctx, rs); return err }); err != nil {
		t.Fatal(err)
	}
	st := steering(t, true)
	if len(st.Raw) == 0 || len(st.Rules) < 4 {
		t.Fatalf("want pass-through and entry rules:\n%s", st)
	}
	apply := func(st hoststate.Steering, want bool, what string) {
		t.Helper()
		var changed bool
		if err := h.Do(func() (err error) { changed, err = s.Apply(ctx, st); return err }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != want {
			out, _ := h.Exec(ctx, "nft", "list", "ruleset")
			t.Fatalf("%s: changed = %v, want %v; live:\n%s", what, changed, want, out)
		}
	}
	nft := func(args ...string) string {
		t.Helper()
		out, err := h.Exec(ctx, append([]string{"nft"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	apply(st, true, "first apply")
	apply(st, false, "second apply")
	if out := nft("list", "table", "inet", hoststate.SteerTable); !strings.Contains(out, "notrack") || !strings.Contains(out, "chain two: back from hop 2") {
		t.Fatalf("live table:\n%s", out)
	}
	for _, damage := range [][]string{
		{"flush", "table", "inet", hoststate.SteerTable},
		{"delete", "table", "inet", hoststate.SteerTable},
		{"flush", "chain", "inet", hoststate.SteerTable, hoststate.SteerRawChain},
		{"add", "rule", "inet", hoststate.SteerTable, hoststate.SteerChain, "accept"},
	} {
		nft(damage...)
		apply(st, true, "repair after nft "+strings.Join(damage, " "))
		apply(st, false, "in sync after repairing "+strings.Join(damage, " "))
	}
	// A rule edited in place, its comment kept: the mark it sets changed.
	editRule(t, h, hoststate.SteerTable, hoststate.SteerChain, "meta mark set 0x1",
		func(r string) string { return strings.Replace(r, "meta mark set 0x1", "meta mark set 0x7", 1) })
	apply(st, true, "repair an edited rule")
	apply(st, false, "in sync after repairing an edited rule")
	apply(steering(t, false), true, "no chains")
	apply(steering(t, false), false, "still no chains")
	out := nft("list", "tables")
	if strings.Contains(out, hoststate.SteerTable) || !strings.Contains(out, "table inet romana") {
		t.Fatalf("after the last chain went the tables are:\n%s", out)
	}
}

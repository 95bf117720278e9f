package firewall

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
)

// ruleset computes h1's ruleset for tenants (name -> isolation), tenant i
// having id i+1 and two segments.
func ruleset(t testing.TB, tenants ...string) hoststate.Ruleset {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	snap := api.Snapshot{Networks: []api.Network{n}, Hosts: []api.Host{{Name: "h1", IP: netip.MustParseAddr("192.168.0.1"),
		Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: 1}, CIDR: netip.MustParsePrefix("10.1.0.0/16")}}}}}
	for i := 0; i+1 < len(tenants); i += 2 {
		id := uint64(i/2 + 1)
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: tenants[i], ID: id, Isolation: tenants[i+1]})
		snap.Segments = append(snap.Segments, api.Segment{Tenant: tenants[i], Name: "a", ID: 0}, api.Segment{Tenant: tenants[i], Name: "b", ID: 1})
	}
	st, err := hoststate.Compute(snap, "h1", hoststate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Problems) > 0 {
		t.Fatal(st.Problems)
	}
	return st.Firewall
}

func TestApplyOnFake(t *testing.T) {
	ctx := context.Background()
	fw, fake := NewFake(nil)
	rs := ruleset(t, "acme", "", "beta", "segment", "open", "none")
	mustApply := func(want bool, what string) {
		t.Helper()
		changed, err := fw.Apply(ctx, rs)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != want {
			t.Fatalf("%s: changed = %v, want %v\n%s", what, changed, want, fake.Dump())
		}
	}
	mustApply(true, "first apply")
	dump := fake.Dump()
	if !strings.Contains(dump, "goto tenant-2") || !strings.Contains(dump, Stamp(rs)) {
		t.Fatalf("table after apply:\n%s", dump)
	}
	mustApply(false, "apply when in sync")

	// Drift: each kind of damage is detected and repaired.
	damage := map[string]func(tx *knftables.Transaction){
		"flushed chain": func(tx *knftables.Transaction) { tx.Flush(&knftables.Chain{Name: "tenant-1"}) },
		"deleted element": func(tx *knftables.Transaction) {
			tx.Delete(&knftables.Element{Map: "tenants-net1", Key: []string{"10.0.16.0"}})
		},
		"deleted table": func(tx *knftables.Transaction) { tx.Delete(&knftables.Table{}) },
		"extra rule":    func(tx *knftables.Transaction) { tx.Add(&knftables.Rule{Chain: "forward", Rule: "accept"}) },
		"drop edited into accept, comment kept": func(tx *knftables.Transaction) {
			c := fake.Table.Chains["tenant-1"]
			last := c.Rules[len(c.Rules)-1]
			if last.Rule != "counter drop" || last.Comment == nil {
				t.Fatalf("tenant-1 ends with %q", last.Rule)
			}
			tx.Replace(&knftables.Rule{Chain: "tenant-1", Handle: last.Handle, Rule: "counter accept", Comment: last.Comment})
		},
	}
	for what, f := range damage {
		tx := fake.NewTransaction()
		f(tx)
		if err := fake.Run(ctx, tx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		mustApply(true, "repair "+what)
		if got := fake.Dump(); got != dump {
			t.Fatalf("after repairing %s the table is\n%s\nwant\n%s", what, got, dump)
		}
	}

	// A new desired ruleset replaces everything, with no stale chains left.
	rs = ruleset(t, "acme", "")
	mustApply(true, "tenants removed")
	if d := fake.Dump(); strings.Contains(d, "segment-2-0") || strings.Contains(d, "tenant-3") {
		t.Fatalf("stale chains left:\n%s", d)
	}
	if err := fw.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if fake.Table != nil {
		t.Fatalf("table survived Cleanup:\n%s", fake.Dump())
	}
	if err := fw.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup without a table: %v", err)
	}
}

func TestApplyRejectsRulesetWithoutBaseChain(t *testing.T) {
	fw, _ := NewFake(nil)
	if _, err := fw.Apply(context.Background(), hoststate.Ruleset{}); err == nil {
		t.Fatal("empty ruleset: no error")
	}
}

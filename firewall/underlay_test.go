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

// flatRuleset is h1's ruleset in flat mode with its underlay known: h2's
// block tied to mac, h3 unresolved.
func flatRuleset(t testing.TB, mac string) hoststate.Ruleset {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	snap := api.Snapshot{Networks: []api.Network{n}, Tenants: []api.Tenant{{Name: "acme", ID: 1}}}
	for i := 1; i <= 3; i++ {
		snap.Hosts = append(snap.Hosts, api.Host{Name: "h" + string(rune('0'+i)), IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: uint64(i)}, CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)}}})
	}
	u := &hoststate.Underlay{
		Links:     []hoststate.Link{{Name: "eth0", Kind: "veth", Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.0.1/24")}}},
		Neighbors: []hoststate.Neighbor{{IP: netip.MustParseAddr("192.168.0.2"), Link: "eth0", MAC: mac}},
	}
	st, err := hoststate.Compute(snap, "h1", hoststate.Options{Underlay: u})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Firewall.Sets) != 1 || len(st.Firewall.Sets[0].Elements) != 1 {
		t.Fatalf("sets: %+v", st.Firewall.Sets)
	}
	return st.Firewall
}

func TestUnderlaySetOnFake(t *testing.T) {
	ctx := context.Background()
	fw, fake := NewFake(nil)
	for _, mac := range []string{"02:00:c0:a8:00:02", "02:00:c0:a8:00:02", "02:00:00:00:00:99"} {
		if _, err := fw.Apply(ctx, flatRuleset(t, mac)); err != nil {
			t.Fatal(err)
		}
		if d := fake.Dump(); !strings.Contains(d, "add element inet romana underlay-v4 { 10.2.0.0/16 . "+mac+" }") {
			t.Fatalf("mac %s: dump:\n%s", mac, d)
		}
	}
}

// The set is applied, found edited (an element deleted, one added, the set
// flushed) and repaired, like everything else in the table.
func TestUnderlaySetInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	var fw *Firewall
	if err := h.Do(func() (err error) { fw, err = New(nil); return err }); err != nil {
		t.Fatal(err)
	}
	rs := flatRuleset(t, "02:00:c0:a8:00:02")
	apply := func(want bool, what string) {
		t.Helper()
		var changed bool
		if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, rs); return err }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != want {
			out, _ := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
			t.Fatalf("%s: changed = %v, want %v; live table:\n%s", what, changed, want, out)
		}
	}
	apply(true, "first apply")
	apply(false, "second apply")
	for _, damage := range [][]string{
		{"delete", "element", "inet", "romana", "underlay-v4", "{ 10.2.0.0/16 . 02:00:c0:a8:00:02 }"},
		{"add", "element", "inet", "romana", "underlay-v4", "{ 10.3.0.0/16 . 02:00:00:00:00:66 }"},
		{"flush", "set", "inet", "romana", "underlay-v4"},
	} {
		if out, err := h.Exec(ctx, append([]string{"nft"}, damage...)...); err != nil {
			t.Fatalf("nft %v: %v\n%s", damage, err, out)
		}
		apply(true, "repair after nft "+strings.Join(damage, " "))
		apply(false, "in sync after repairing "+strings.Join(damage, " "))
		out, _ := h.Exec(ctx, "nft", "list", "set", "inet", "romana", "underlay-v4")
		if !strings.Contains(out, "10.2.0.0/16 . 02:00:c0:a8:00:02") || strings.Contains(out, "10.3.0.0/16") {
			t.Fatalf("after repairing %v the set is:\n%s", damage, out)
		}
	}
	rs = flatRuleset(t, "02:00:00:00:00:99")
	apply(true, "h2's MAC changed")
	if out, _ := h.Exec(ctx, "nft", "list", "set", "inet", "romana", "underlay-v4"); !strings.Contains(out, "10.2.0.0/16 . 02:00:00:00:00:99") {
		t.Fatalf("after the MAC changed the set is:\n%s", out)
	}
}

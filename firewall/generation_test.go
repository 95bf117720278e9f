package firewall

import (
	"context"
	"net/netip"
	"testing"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/sim/simtest"
)

// countingLister counts the listings of the whole table.
type countingLister struct {
	lister
	lists int
}

func (c *countingLister) list(ctx context.Context) (*listing, error) {
	c.lists++
	return c.lister.list(ctx)
}

// A resync lists the table only when the kernel's ruleset generation
// moved since the adapter's last write; an edit still moves it, and is
// repaired.
func TestGenerationSkipsListingInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	h, err := simtest.New(t).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.65.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	nft := func(args ...string) {
		t.Helper()
		if _, err := h.Exec(ctx, append([]string{"nft"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	var fw *Firewall
	var cl *countingLister
	if err := h.Do(func() error {
		g0, err := kernelGeneration()
		if err != nil {
			return err
		}
		nft("add", "table", "ip", "other")
		if g1, err := kernelGeneration(); err != nil || g1 != g0+1 {
			t.Fatalf("generation %d after one commit from %d (err %v)", g1, g0, err)
		}
		fw, err = New(nil)
		cl = &countingLister{lister: fw.lister}
		fw.lister = cl
		return err
	}); err != nil {
		t.Fatal(err)
	}
	a, b := withPolicies(t, ingressPolicy(80)), withPolicies(t, ingressPolicy(81))
	step := func(what string, rs hoststate.Ruleset, wantChanged bool, wantLists int) {
		t.Helper()
		before := cl.lists
		var changed bool
		if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, rs); return err }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != wantChanged || cl.lists-before != wantLists {
			t.Fatalf("%s: changed = %v, %d listings of the table; want %v, %d", what, changed, cl.lists-before, wantChanged, wantLists)
		}
	}
	step("first apply", a, true, 2)     // a check (table missing), the listing after the replacement
	step("resync", a, false, 0)         // generation unchanged
	nft("add", "table", "ip", "other2") // another table: the generation moves
	step("resync after a commit elsewhere", a, false, 1)
	step("resync again", a, false, 0)
	step("policy change (delta)", b, true, 0)
	step("resync after the delta", b, false, 0)
	nft("add", "table", "ip", "other3") // what nft lists of the chains a delta wrote equals their part of the table's listing
	step("resync after the delta and a commit elsewhere", b, false, 1)
	nft("add", "rule", "inet", "romana", "forward", "counter")
	step("resync after an edit", b, true, 2) // found, replaced, listed after
	step("resync after the repair", b, false, 0)
}

package firewall

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
)

// sameIndex reports whether two indexes hold the same hashes and the same
// combinations of them.
func sameIndex(a, b *hashIndex) bool {
	return maps.Equal(a.m, b.m) && a.all == b.all && a.pol == b.pol && a.npol == b.npol
}

// Blocks set and deleted one by one keep the combinations equal to those
// of the same blocks indexed at once, and the combined hashes change with
// any block's hash, and only the stamp covering it.
func TestHashIndexIncremental(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{"chain forward", "chain input", "chain policies", "chain policy-ingress.net1.t1",
		"chain policy-egress.net1.t2.p1", "chain tenant-1", "set endpoints", "map tenants-net1"}
	x := newHashIndex(0)
	for step := range 500 {
		b := names[r.IntN(len(names))]
		if r.IntN(4) == 0 {
			x.del(b)
		} else {
			x.set(b, fmt.Sprintf("%024x", r.IntN(5)))
		}
		if want := indexOf(maps.Clone(x.m)); !sameIndex(x, want) {
			t.Fatalf("step %d: incremental index %+v, indexed at once %+v", step, x, want)
		}
		c := x.clone()
		if c.set("chain scratch", "0"); sameIndex(c, x) || x.m["chain scratch"] != "" {
			t.Fatalf("step %d: a clone shares its blocks with the original", step)
		}
	}
	// Every block's hash counts, in the stamp that covers it.
	for _, b := range names {
		for _, h := range []string{"a", "b"} {
			x.set(b, h)
		}
	}
	all, base, pol := x.sum(), x.sumBase(""), x.sumPolicy()
	for _, b := range names {
		c := x.clone()
		c.set(b, "c")
		if c.sum() == all {
			t.Errorf("%s changed: the combined hash did not", b)
		}
		if isPolicyBlock(b) != (c.sumPolicy() != pol) || isPolicyBlock(b) == (c.sumBase("") != base) {
			t.Errorf("%s changed (policy chain %v): base stamp changed %v, policy stamp changed %v", b, isPolicyBlock(b), c.sumBase("") != base, c.sumPolicy() != pol)
		}
		c = x.clone()
		c.del(b)
		if c.sum() == all {
			t.Errorf("%s deleted: the combined hash did not change", b)
		}
		if got := x.sumWithout(map[string]bool{b: true}); got != c.sum() {
			t.Errorf("sum without %s: %s, want the sum of the index without it %s", b, got, c.sum())
		}
		c.set(b, "b")
		if c.sum() != all {
			t.Errorf("%s deleted and set again: combined hash %s, want %s", b, c.sum(), all)
		}
	}
	// Two blocks swapping their hashes change the sum: a term holds its
	// block's name.
	c := x.clone()
	c.set("chain forward", "x")
	c.set("chain input", "y")
	d := x.clone()
	d.set("chain forward", "y")
	d.set("chain input", "x")
	if c.sum() == d.sum() {
		t.Error("two blocks swapping their hashes leave the combined hash as it was")
	}
	if x.sumBase("") == x.sumBase("flowtables") {
		t.Error("the rest of the ruleset does not change the base stamp")
	}
}

// sinkNFT takes transactions without applying them, moving a ruleset
// generation as the kernel does, and keeps the last one's text: the
// firewall's own work per change can be measured apart from nft's.
type sinkNFT struct {
	*knftables.Fake
	gen  uint32
	last string
}

func (s *sinkNFT) Run(_ context.Context, tx *knftables.Transaction) error {
	s.gen++
	s.last = tx.String()
	return nil
}

// costRuleset is a ruleset of n policy chains of 5 rules each beside the
// base chains, a set and a map.
func costRuleset(n int) hoststate.Ruleset {
	rs := hoststate.Ruleset{
		Sets: []hoststate.Set{{Name: "endpoints", KeyType: "ipv4_addr"}},
		Maps: []hoststate.Map{{Name: "tenants", KeyType: "ipv4_addr"}},
		Chains: []hoststate.Chain{
			{Name: hoststate.ChainForward, Hook: "forward", Rules: []hoststate.Rule{{Expr: "jump " + hoststate.ChainPolicies}}},
			{Name: hoststate.ChainPolicies},
		},
	}
	for i := range 100 {
		rs.Sets[0].Elements = append(rs.Sets[0].Elements, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
		rs.Maps[0].Elements = append(rs.Maps[0].Elements, hoststate.Element{Key: fmt.Sprintf("10.2.%d.0", i), Verdict: "drop"})
	}
	for i := range n {
		c := hoststate.Chain{Name: fmt.Sprintf("%s.t%d", hoststate.ChainPolicyIngress, i)}
		for j := range 5 {
			c.Rules = append(c.Rules, hoststate.Rule{Expr: fmt.Sprintf("ip saddr 10.3.%d.%d tcp dport %d accept", i%250, j, 80+j)})
		}
		rs.Chains = append(rs.Chains, c)
	}
	return rs
}

// withPort returns rs with the first rule of its first policy chain
// matching another port: one chain changed, every other shared.
func withPort(rs hoststate.Ruleset, port int) hoststate.Ruleset {
	rs.Chains = slices.Clone(rs.Chains)
	c := &rs.Chains[2]
	c.Rules = slices.Clone(c.Rules)
	c.Rules[0].Expr = fmt.Sprintf("ip saddr 10.9.9.9 tcp dport %d accept", port)
	return rs
}

// deltaBytes returns the bytes the firewall allocates per policy change
// that rewrites one chain of a ruleset of n policy chains, nft excluded.
func deltaBytes(t *testing.T, n int) float64 {
	ctx := context.Background()
	fw, fake := NewFake(nil)
	base := costRuleset(n)
	if _, err := fw.Apply(ctx, base); err != nil {
		t.Fatal(err)
	}
	sink := &sinkNFT{Fake: fake}
	fw.nft = sink
	fw.gen = func() (uint32, error) { return sink.gen, nil }
	fw.last.gen, fw.last.genOK = sink.gen, true
	rss := []hoststate.Ruleset{withPort(base, 1), withPort(base, 2)}
	if _, err := fw.Apply(ctx, rss[0]); err != nil {
		t.Fatal(err)
	}
	const changes = 50
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range changes {
		if changed, err := fw.Apply(ctx, rss[(i+1)%2]); err != nil || !changed {
			t.Fatalf("change %d: changed %v, err %v", i, changed, err)
		}
	}
	runtime.ReadMemStats(&m1)
	if fw.last == nil || len(fw.last.pending) != 1 || !fw.last.genOK {
		t.Fatalf("after the changes: last %+v, want one pending chain and the generation known", fw.last)
	}
	if !sameIndex(fw.last.hashes, desired(rss[changes%2])) {
		t.Fatal("hashes kept after the changes differ from the ruleset's")
	}
	return float64(m1.TotalAlloc-m0.TotalAlloc) / changes
}

// A policy change costs the firewall what it changes: the memory it
// allocates (a proxy for its CPU, the garbage collector's included) is
// about the same in a table of 2,000 chains as in one of 100. Before the
// hashes were kept incrementally, each change cloned, sorted and hashed
// every block's hash (2,000 chains: about 20 times the bytes of 100).
func TestDeltaCostFollowsChange(t *testing.T) {
	small, big := deltaBytes(t, 100), deltaBytes(t, 2000)
	t.Logf("bytes allocated per change: %.0f with 100 chains, %.0f with 2,000", small, big)
	if big > 2*small {
		t.Fatalf("a change allocates %.0f bytes with 2,000 chains, %.0f with 100: it grows with the table", big, small)
	}
}

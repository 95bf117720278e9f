package hoststate

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
	"github.com/romana/romana/policy"
)

// targetedOnly rewrites policies to apply to tenants and segments only
// (no rule applied to all endpoints), so that every tier is assembled by
// tierChainsCached.
func targetedOnly(r *rand.Rand, ps []api.Policy) []api.Policy {
	groups := [][2]string{{"acme", ""}, {"acme", "a"}, {"beta", ""}, {"beta", "web"}, {"beta", "db"}, {"solo", "x"}, {"solo", ""}, {"open", ""}}
	for i := range ps {
		ps[i].AppliedTo = append([]api.Selector(nil), ps[i].AppliedTo...)
		for j, s := range ps[i].AppliedTo {
			if s.All || s.Host != "" || s.Tenant == "" {
				g := groups[r.IntN(len(groups))]
				ps[i].AppliedTo[j] = api.Selector{Tenant: g[0], Segment: g[1], Set: s.Set}
			}
		}
	}
	return ps
}

// The incremental assembly of a tier without rules applied to all
// endpoints gives exactly the chains tierChains assembles whole, at its
// first call and again from its cache.
func TestAssembledChainsMatchWhole(t *testing.T) {
	l, _ := dispatchLab(t)
	for seed := range 60 {
		r := rand.New(rand.NewPCG(uint64(seed), 77))
		l.snap.Policies = targetedOnly(r, randomPolicies(r, 2+r.IntN(20)))
		m := model.New(l.snap)
		for _, host := range []string{"h1", "h2"} {
			local := policy.Blocks(m, host)
			nets := make([]*model.Network, len(local))
			for i, lo := range local {
				nets[i] = m.Network(lo.Network)
			}
			var c Compiler
			compiled := c.compile(m, host, local)
			for stage := range 2 {
				tiers := presentTiers(stage, compiled)
				mp := piecesPerChain(len(tiers), 0)
				for i, tier := range tiers {
					next := ""
					if i+1 < len(tiers) {
						next = tierEntry(stage, tiers[i+1])
					}
					byKey := map[matchKey][]*compiledPolicy{}
					var rules []*compiledRule
					for _, p := range compiled {
						if p.tier == tier && len(p.stages[stage]) > 0 {
							if p.generic[stage] {
								t.Fatalf("seed %d: policy %s applies to all: %+v", seed, p.raw.Name, p.raw.AppliedTo)
							}
							for _, k := range p.keys[stage] {
								byKey[k] = append(byKey[k], p)
							}
							for j := range p.stages[stage] {
								rules = append(rules, &p.stages[stage][j])
							}
						}
					}
					if ti := c.idx.tiers[stage][tier]; ti != nil && !reflect.DeepEqual(ti.byKey, byKey) {
						t.Fatalf("seed %d host %s stage %d tier %d: the compiler's index differs from its policies", seed, host, stage, tier)
					}
					want := tierChains(stage, tier, mp, next, rules, local, m)
					for round := range 2 {
						got, ok := c.tierChainsCached(nil, stage, tier, mp, next, byKey, local, nets, m)
						if !ok {
							t.Fatalf("seed %d host %s stage %d tier %d: a target outside the host's networks", seed, host, stage, tier)
						}
						if !reflect.DeepEqual(got, want) {
							t.Fatalf("seed %d host %s stage %d tier %d round %d:\n%s\nwant\n%s", seed, host, stage, tier, round,
								Ruleset{Chains: got}, Ruleset{Chains: want})
						}
					}
				}
			}
		}
	}
}

// A change to one policy assembles again exactly the target chains whose
// rules it changes, and the result is what a fresh computation gives.
func TestPolicyChangeAssemblesItsChains(t *testing.T) {
	l, _ := dispatchLab(t)
	r := rand.New(rand.NewPCG(3, 4))
	l.snap.Policies = targetedOnly(r, randomPolicies(r, 40))
	m := model.New(l.snap)
	var c Compiler
	before, _, err := c.Firewall(m, "h1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	reassembled := 0
	for step := range 40 {
		ps := m.Policies()
		p := ps[r.IntN(len(ps))]
		p.Rules = append([]api.Rule(nil), p.Rules...)
		p.Rules[0].Protocol, p.Rules[0].Ports, p.Rules[0].PortRanges = "tcp", []uint16{uint16(1000 + step)}, nil
		if _, _, err := m.Apply(putEvent(int64(step+2), api.KindPolicy, p.Name, p)); err != nil {
			t.Fatal(err)
		}
		after, _, err := c.Firewall(m, "h1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		fresh, _, err := ComputeFirewall(model.New(m.Snapshot()), "h1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !after.Equal(fresh) {
			t.Fatalf("step %d: the compiler's ruleset differs from a fresh one:\n%s\n---\n%s", step, after, fresh)
		}
		// Assembled again: at least every target chain whose rules
		// changed, at most those holding a rule of the policy.
		assembled := map[string]bool{}
		for _, name := range c.assembled {
			assembled[name] = true
		}
		holds := func(rs Ruleset, name string) bool {
			ch := rs.Chain(name)
			return ch != nil && slices.ContainsFunc(ch.Rules, func(r Rule) bool { return r.Policy == p.Name })
		}
		changed := 0
		for _, ch := range after.Chains {
			if !isTargetChain(ch.Name) {
				continue
			}
			if o := before.Chain(ch.Name); o == nil || !reflect.DeepEqual(o.Rules, ch.Rules) {
				changed++
				if !assembled[ch.Name] {
					t.Fatalf("step %d, policy %s changed: chain %s changed but was not assembled again", step, p.Name, ch.Name)
				}
			}
		}
		for name := range assembled {
			if !holds(before, name) && !holds(after, name) {
				t.Fatalf("step %d, policy %s changed: chain %s assembled again, holding no rule of it", step, p.Name, name)
			}
		}
		reassembled += changed
		before = after
	}
	if reassembled == 0 {
		t.Fatal("no change reached a target chain: the test tests nothing")
	}
	t.Logf("%d target chains assembled again over 40 changes", reassembled)
}

// isTargetChain reports whether a policy chain is a target chain (not an
// entry or rest chain).
func isTargetChain(name string) bool {
	for stage := range 2 {
		for tier := range policy.Tiers {
			if e := tierEntry(stage, tier); len(name) > len(e) && name[:len(e)+1] == e+"." && name != e+restSuffix {
				return true
			}
		}
	}
	return false
}

// splitChain cuts a chain into pieces joined by goto that hold, in
// order, exactly its rules; a boundary depends on the policy found there
// only, so adding or removing a policy changes the piece holding it and
// at most the piece before (its goto), never the others.
func TestSplitChainPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 1))
	chainOf := func(pols []string) Chain {
		c := Chain{Name: "policy-ingress.net1.t1", Comment: "ingress policies of tenant t1"}
		for _, p := range pols {
			for i := range 1 + len(p)%3 {
				c.Rules = append(c.Rules, Rule{Expr: "tcp dport " + strconv.Itoa(i) + " counter accept", Comment: "policy " + p, Policy: p})
			}
		}
		return c
	}
	cuts := 0
	for round := range 200 {
		var pols []string
		for i := range 5 + r.IntN(60) {
			pols = append(pols, fmt.Sprintf("pol-%d-%d", round, i))
		}
		whole := chainOf(pols)
		whole.Rules = append(whole.Rules, Rule{Expr: "goto policy-ingress.rest"})
		pieces := splitChain(whole, 1000)
		if pieces[0].Name != whole.Name || pieces[0].Comment != whole.Comment {
			t.Fatalf("round %d: first piece %q (%q), want the chain's name and comment", round, pieces[0].Name, pieces[0].Comment)
		}
		var joined []Rule
		for i, p := range pieces {
			rules := p.Rules
			if i+1 < len(pieces) {
				if last := rules[len(rules)-1]; last.Expr != "goto "+pieces[i+1].Name || last.Policy != "" {
					t.Fatalf("round %d: piece %s ends with %q, want goto %s", round, p.Name, last.Expr, pieces[i+1].Name)
				}
				rules = rules[:len(rules)-1]
			}
			if i > 0 && !strings.HasPrefix(p.Name, whole.Name+pieceSuffix) {
				t.Fatalf("round %d: piece %s not named after its chain", round, p.Name)
			}
			joined = append(joined, rules...)
		}
		if !reflect.DeepEqual(joined, whole.Rules) {
			t.Fatalf("round %d: the pieces hold other rules than the chain", round)
		}
		cuts += len(pieces) - 1
		// One policy more (or fewer) somewhere: the other pieces stay.
		k := r.IntN(len(pols))
		var changed []string
		if r.IntN(2) == 0 {
			changed = slices.Concat(pols[:k], []string{fmt.Sprintf("new-%d", round)}, pols[k:])
		} else {
			changed = slices.Concat(pols[:k], pols[k+1:])
		}
		other := chainOf(changed)
		other.Rules = append(other.Rules, Rule{Expr: "goto policy-ingress.rest"})
		after := map[string]Chain{}
		for _, p := range splitChain(other, 1000) {
			after[p.Name] = p
		}
		differ := 0
		for _, p := range pieces {
			if a, ok := after[p.Name]; !ok || !reflect.DeepEqual(a, p) {
				differ++
			}
		}
		if differ > 2 {
			t.Fatalf("round %d: one policy changed %d pieces of %d", round, differ, len(pieces))
		}
		// A bound on the pieces holds, and they still hold the rules.
		for _, limit := range []int{1, 2, 3, 5, 11} {
			got := splitChain(whole, limit)
			if len(got) > limit {
				t.Fatalf("round %d: %d pieces, at most %d wanted", round, len(got), limit)
			}
			var rules []Rule
			for i, p := range got {
				n := len(p.Rules)
				if i+1 < len(got) {
					n--
				}
				rules = append(rules, p.Rules[:n]...)
			}
			if !reflect.DeepEqual(rules, whole.Rules) {
				t.Fatalf("round %d, at most %d pieces: other rules than the chain's", round, limit)
			}
		}
	}
	if cuts == 0 {
		t.Fatal("no chain was cut: the test tests nothing")
	}
	t.Logf("%d cuts in 200 chains", cuts)
}

// chainDepth returns the largest number of jumps and gotos from the
// forward chain to any chain of rs, as the kernel counts them when it
// validates a table (a goto counts as a jump there), following rules'
// verdicts, anonymous verdict maps and named maps.
func chainDepth(t *testing.T, rs Ruleset) int {
	maps := map[string][]string{}
	for _, m := range rs.Maps {
		for _, e := range m.Elements {
			maps[m.Name] = append(maps[m.Name], e.Verdict)
		}
	}
	targets := func(c *Chain) []string {
		var out []string
		for _, r := range c.Rules {
			f := strings.Fields(r.Expr)
			for i, w := range f {
				switch {
				case (w == "jump" || w == "goto") && i+1 < len(f):
					out = append(out, strings.TrimSuffix(f[i+1], ","))
				case w == "vmap" && i+1 < len(f) && strings.HasPrefix(f[i+1], "@"):
					for _, v := range maps[f[i+1][1:]] {
						if _, to, ok := strings.Cut(v, " "); ok {
							out = append(out, to)
						}
					}
				}
			}
		}
		return out
	}
	// The longest path from each chain (the graph has no loop: the
	// kernel refuses one), each chain's found once.
	longest := map[string]int{}
	var walk func(name string, depth int) int
	walk = func(name string, depth int) int {
		if depth > 30 {
			t.Fatalf("chain %s: a loop", name)
		}
		if n, ok := longest[name]; ok {
			return n
		}
		c := rs.Chain(name)
		if c == nil {
			t.Fatalf("no chain %s", name)
		}
		n := 0
		for _, to := range targets(c) {
			n = max(n, 1+walk(to, depth+1))
		}
		longest[name] = n
		return n
	}
	return walk(ChainForward, 0)
}

// Cutting target chains into pieces keeps every chain within
// maxPolicyDepth jumps and gotos of the forward chain (the kernel refuses
// a table with a chain more than 15 away), whatever tiers and rest chains
// there are, and the pieces still decide as the policies do.
func TestPiecesWithinJumpDepth(t *testing.T) {
	l, _ := dispatchLab(t)
	pieces := 0
	for seed := range 12 {
		r := rand.New(rand.NewPCG(uint64(seed), 5))
		ps := randomPolicies(r, 150+r.IntN(300))
		if seed%2 == 0 {
			ps = targetedOnly(r, ps)
		}
		l.snap.Policies = ps
		for _, h := range l.snap.Hosts {
			rs := l.compute(h.Name, ModeFlat).Firewall
			if d := chainDepth(t, rs); d > maxPolicyDepth {
				t.Fatalf("seed %d host %s: a chain %d jumps from the forward chain, more than %d", seed, h.Name, d, maxPolicyDepth)
			}
			for _, c := range rs.Chains {
				if strings.Contains(c.Name, pieceSuffix) && IsPolicyChain(c.Name) {
					pieces++
				}
			}
		}
	}
	if pieces == 0 {
		t.Fatal("no chain was cut: the test tests nothing")
	}
	t.Logf("%d pieces", pieces)
}

package hoststate

import (
	"math/rand/v2"
	"reflect"
	"slices"
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
			compiled := c.compile(m, host, local, m.Policies())
			for stage := range 2 {
				tiers := presentTiers(stage, compiled)
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
					want := tierChains(stage, tier, next, rules, local, m)
					for round := range 2 {
						got, ok := c.tierChainsCached(stage, tier, next, byKey, local, nets, m)
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

package hoststate

import (
	"slices"

	"github.com/romana/romana/api"
	"github.com/romana/romana/policy"
)

// defaultTier is the default tier's rank.
var defaultTier = policy.TierRank(api.TierDefault)

// policyIndex is what a Compiler knows of its compiled policies by stage, tier
// and target, kept up to date policy by policy, so that assembling the
// chains after one change does not read every policy again.
type policyIndex struct {
	// tiers are, per stage (0 egress, 1 ingress), the tiers with rules,
	// by rank.
	tiers [2]map[int]*tierIndex
	// extras are the policies with a problem, address sets or peer sets:
	// what every assembly reads of them besides their chains' rules.
	extras map[*compiledPolicy]bool
}

// tierIndex is one tier of one stage.
type tierIndex struct {
	// count is the number of policies with rules in it; generic of those
	// with a rule applied to all endpoints.
	count, generic int
	// byKey are, by target (masked match), the policies with rules for
	// it, in precedence order. A list is never modified once made (a
	// change makes a new one): the assembly keeps it to tell a change.
	byKey map[matchKey][]*compiledPolicy
}

// rebuild indexes pols (in precedence order) from scratch.
func (x *policyIndex) rebuild(pols []*compiledPolicy) {
	*x = policyIndex{}
	for _, p := range pols {
		x.add(p, false)
	}
}

// update applies one change.
func (x *policyIndex) update(ch change) {
	if ch.old != nil {
		x.remove(ch.old)
	}
	if ch.new != nil {
		x.add(ch.new, true)
	}
}

func hasExtras(p *compiledPolicy) bool {
	return p.problem != "" || len(p.setRefs) > 0 || len(p.sets) > 0 || len(p.addrSets) > 0
}

// add indexes p; insert places it by precedence (else it is appended:
// rebuild adds policies in order).
func (x *policyIndex) add(p *compiledPolicy, insert bool) {
	if hasExtras(p) {
		if x.extras == nil {
			x.extras = map[*compiledPolicy]bool{}
		}
		x.extras[p] = true
	}
	for stage := range 2 {
		if len(p.stages[stage]) == 0 {
			continue
		}
		if x.tiers[stage] == nil {
			x.tiers[stage] = map[int]*tierIndex{}
		}
		t := x.tiers[stage][p.tier]
		if t == nil {
			t = &tierIndex{byKey: map[matchKey][]*compiledPolicy{}}
			x.tiers[stage][p.tier] = t
		}
		t.count++
		if p.generic[stage] {
			t.generic++
		}
		for _, k := range p.keys[stage] {
			l := t.byKey[k]
			if !insert {
				t.byKey[k] = append(l, p) // made by rebuild alone: nothing kept it yet
				continue
			}
			i, _ := slices.BinarySearchFunc(l, p, precedence)
			t.byKey[k] = slices.Concat(l[:i], []*compiledPolicy{p}, l[i:])
		}
	}
}

// remove forgets p.
func (x *policyIndex) remove(p *compiledPolicy) {
	delete(x.extras, p)
	for stage := range 2 {
		t := x.tiers[stage][p.tier]
		if len(p.stages[stage]) == 0 || t == nil {
			continue
		}
		t.count--
		if p.generic[stage] {
			t.generic--
		}
		for _, k := range p.keys[stage] {
			l := t.byKey[k]
			i, ok := slices.BinarySearchFunc(l, p, precedence)
			if !ok || l[i] != p {
				continue
			}
			if len(l) == 1 {
				delete(t.byKey, k)
			} else {
				t.byKey[k] = slices.Concat(l[:i], l[i+1:])
			}
		}
		if t.count == 0 {
			delete(x.tiers[stage], p.tier)
		}
	}
}

// present returns the ranks (policy.TierRank) of the tiers with rules in
// the stage, in order; just the default tier when none has.
func (x *policyIndex) present(stage int) []int {
	var out []int
	for tier := range x.tiers[stage] {
		out = append(out, tier)
	}
	slices.Sort(out)
	if len(out) == 0 {
		out = []int{defaultTier}
	}
	return out
}

package hoststate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
	"github.com/romana/romana/policy"
)

// Incremental assembly of the dispatch (see the comment on
// ChainPolicyEgress). A tier none of whose rules applies to all endpoints
// (the usual case: policies applied to tenants and segments) has no rest
// chain, and each of its target chains holds exactly the rules, in
// precedence order, of the policies with rules for its target and, for a
// segment, for its tenant. So a target chain is a function of two lists of
// compiled policies (which never change once made: a changed policy is a
// new value) and of the next tier: the Compiler keeps each target chain
// with those lists and assembles it again only when they differ. One
// policy change thus assembles the chains of the targets that policy had
// or has, and the entry chain only when the set of targets changed.
// Tiers with rules applied to all endpoints are assembled whole by
// tierChains, as by a Compiler with nothing cached.

// assembly is what a Compiler keeps of the dispatch between calls.
type assembly struct {
	// targets are the targets resolved so far (network, tenant,
	// segment), by their masked match; they depend on the networks only,
	// whose change resets the Compiler.
	targets map[matchKey]*target
	// chains are the target chains, entries the entry chains, by name.
	chains  map[string]*assembledChain
	entries map[string]*assembledEntry
}

// reset drops the assembled chains (their comments name tenants and
// segments); the resolved targets stay.
func (a *assembly) reset() {
	a.chains, a.entries = nil, nil
}

// assembledChain is a target chain and what it was assembled from.
type assembledChain struct {
	own, parent []*compiledPolicy
	next        string // the next tier's entry chain, or ""
	seen        uint64 // the last call that used it
	chain       Chain
}

// assembledEntry is an entry chain and the targets it dispatches to.
type assembledEntry struct {
	targets []*target
	next    string
	seen    uint64
	chain   Chain
}

// tierChainsCached returns what tierChains returns for a tier without
// rules applied to all endpoints (byKey: the tier's policies with rules
// in the stage, by target, in precedence order; tierIndex), reusing the
// chains assembled at earlier calls whose policies are the same. ok is false when a target is not a
// tenant or segment of this host's networks (tierChains then evaluates
// its rules in the rest chain).
func (c *Compiler) tierChainsCached(stage, tier int, next string, byKey map[matchKey][]*compiledPolicy, local []policy.Local, nets []*model.Network, m *model.Model) (out []Chain, ok bool) {
	a := &c.asm
	if a.targets == nil {
		a.targets = map[matchKey]*target{}
	}
	if a.chains == nil {
		a.chains, a.entries = map[string]*assembledChain{}, map[string]*assembledEntry{}
	}
	list := make([]*target, 0, len(byKey))
	for k := range byKey {
		tg := a.targets[k]
		if tg == nil {
			tg = newTarget(k, nets)
			a.targets[k] = tg
		}
		if tg.network < 0 {
			return nil, false
		}
		list = append(list, tg)
	}
	slices.SortFunc(list, func(a, b *target) int {
		return cmp.Or(cmp.Compare(a.network, b.network), cmp.Compare(a.tenant, b.tenant), compareBool(a.segment, b.segment), cmp.Compare(a.seg, b.seg))
	})
	st := stages[stage]
	entryName := tierEntry(stage, tier)
	tierNote := ""
	if t := policy.Tiers[tier]; t != api.TierDefault {
		tierNote = t + " tier: "
	}
	passVerdict, fallOff := "return", []Rule(nil)
	if next != "" {
		passVerdict = "goto " + next
		fallOff = []Rule{{Expr: "goto " + next}}
	}

	e := a.entries[entryName]
	if e == nil || e.next != next || !slices.Equal(e.targets, list) {
		entry := Chain{Name: entryName, Comment: tierNote + st.comment}
		for n, l := range local {
			plan := nets[n].Plan
			for _, segment := range []bool{true, false} {
				mask := plan.TenantMask()
				if segment {
					mask = plan.SegmentMask()
				}
				var elems []string
				for _, tg := range list {
					if tg.network == n && tg.segment == segment {
						elems = append(elems, tg.key.value.String()+" : goto "+tg.chain(entryName, local))
					}
				}
				if len(elems) == 0 {
					continue
				}
				entry.Rules = append(entry.Rules, Rule{Expr: fmt.Sprintf("%s %s & %s vmap { %s }", l.Family(), st.field, mask, strings.Join(elems, " , "))})
			}
		}
		entry.Rules = append(entry.Rules, fallOff...)
		e = &assembledEntry{targets: list, next: next, chain: entry}
		a.entries[entryName] = e
	}
	e.seen = c.call
	out = append(out, e.chain)

	var tenants map[uint64]api.Tenant // by ID, made when a comment is needed
	for _, tg := range list {
		own := byKey[tg.key]
		var parent []*compiledPolicy
		var parentKey matchKey
		if tg.segment {
			mask := nets[tg.network].Plan.TenantMask()
			parentKey = matchKey{mask, maskAddr(tg.key.value, mask)}
			parent = byKey[parentKey]
		}
		name := tg.chain(entryName, local)
		ac := a.chains[name]
		if ac == nil || ac.next != next || !slices.Equal(ac.own, own) || !slices.Equal(ac.parent, parent) {
			if tenants == nil {
				tenants = map[uint64]api.Tenant{}
				for _, t := range m.Tenants() {
					tenants[t.ID] = t
				}
			}
			ch := Chain{Name: name, Comment: clip(tierNote + targetCommentIn(st.name, tg, m, nets[tg.network], tenants))}
			n := len(fallOff)
			for _, p := range mergePolicies(own, parent) {
				n += len(p.stages[stage]) // at most
			}
			ch.Rules = make([]Rule, 0, n)
			for _, p := range mergePolicies(own, parent) {
				for i := range p.stages[stage] {
					r := &p.stages[stage][i]
					t := r.rule.Target
					if !t.Mask.IsValid() {
						continue
					}
					if k := (matchKey{t.Mask, t.Value}); k == tg.key || parent != nil && k == parentKey {
						ch.Rules = append(ch.Rules, nftOfRule(r, passVerdict)...)
					}
				}
			}
			ch.Rules = append(ch.Rules, fallOff...)
			ac = &assembledChain{own: own, parent: parent, next: next, chain: ch}
			a.chains[name] = ac
			c.assembled = append(c.assembled, name)
		}
		ac.seen = c.call
		out = append(out, ac.chain)
	}
	return out, true
}

// sweep forgets the chains the last call did not use.
func (a *assembly) sweep(call uint64) {
	for name, ac := range a.chains {
		if ac.seen != call {
			delete(a.chains, name)
		}
	}
	for name, e := range a.entries {
		if e.seen != call {
			delete(a.entries, name)
		}
	}
}

// mergePolicies merges two lists in precedence order into one, each
// policy once.
func mergePolicies(a, b []*compiledPolicy) []*compiledPolicy {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]*compiledPolicy, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b):
			out = append(out, a[i])
			i++
		case i == len(a):
			out = append(out, b[j])
			j++
		default:
			switch c := precedence(a[i], b[j]); {
			case c < 0:
				out = append(out, a[i])
				i++
			case c > 0:
				out = append(out, b[j])
				j++
			default:
				out = append(out, a[i])
				i++
				j++
			}
		}
	}
	return out
}

// nftOfRule is a compiled rule's nft rules, a pass rule's verdict filled in.
func nftOfRule(r *compiledRule, passVerdict string) []Rule {
	if r.rule.Action != api.ActionPass {
		return r.nft
	}
	out := slices.Clone(r.nft)
	last := &out[len(out)-1]
	last.Expr = strings.TrimSuffix(last.Expr, policy.PassVerdict) + passVerdict
	return out
}

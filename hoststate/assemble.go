package hoststate

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math/bits"
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
	// tenants are the model's tenants by ID, for chain comments.
	tenants map[uint64]api.Tenant
	// list is scratch space for a tier's targets.
	list []*target
}

// reset drops the assembled chains (their comments name tenants and
// segments); the resolved targets stay.
func (a *assembly) reset() {
	a.chains, a.entries, a.tenants = nil, nil, nil
}

// assembledChain is a target chain, cut into pieces (splitChain), and
// what it was assembled from.
type assembledChain struct {
	own, parent []*compiledPolicy
	next        string // the next tier's entry chain, or ""
	maxPieces   int
	seen        uint64 // the last call that used it
	pieces      []Chain
}

// assembledEntry is an entry chain and the targets it dispatches to.
type assembledEntry struct {
	targets []*target
	next    string
	seen    uint64
	chain   Chain
}

// tierChainsCached appends to out what tierChains returns for a tier
// without rules applied to all endpoints (byKey: the tier's policies with
// rules in the stage, by target, in precedence order; tierIndex), reusing
// the chains assembled at earlier calls whose policies are the same. ok is
// false, and out returned as it was, when a target is not a tenant or
// segment of this host's networks (tierChains then evaluates its rules in
// the rest chain).
func (c *Compiler) tierChainsCached(out []Chain, stage, tier, maxPieces int, next string, byKey map[matchKey][]*compiledPolicy, local []policy.Local, nets []*model.Network, m *model.Model) (_ []Chain, ok bool) {
	a := &c.asm
	if a.targets == nil {
		a.targets = map[matchKey]*target{}
	}
	if a.chains == nil {
		a.chains, a.entries = map[string]*assembledChain{}, map[string]*assembledEntry{}
	}
	list := c.asm.list[:0]
	for k := range byKey {
		tg := a.targets[k]
		if tg == nil {
			tg = newTarget(k, nets)
			a.targets[k] = tg
		}
		if tg.network < 0 {
			return out, false
		}
		list = append(list, tg)
	}
	a.list = list
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
		list = slices.Clone(list) // the entry keeps it
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
		if ac == nil || ac.next != next || ac.maxPieces != maxPieces || !slices.Equal(ac.own, own) || !slices.Equal(ac.parent, parent) {
			if a.tenants == nil { // by ID, made when a comment is needed
				a.tenants = map[uint64]api.Tenant{}
				for _, t := range m.Tenants() {
					a.tenants[t.ID] = t
				}
			}
			ch := Chain{Name: name, Comment: clip(tierNote + targetComment(st.name, tg, m, nets[tg.network], a.tenants))}
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
			pieces := splitChain(ch, maxPieces)
			// A piece whose rules are as before stays the value it was
			// (the firewall adapter then compares nothing of it).
			var old map[string]*Chain
			if ac != nil {
				old = make(map[string]*Chain, len(ac.pieces))
				for i := range ac.pieces {
					old[ac.pieces[i].Name] = &ac.pieces[i]
				}
			}
			for i, p := range pieces {
				if o := old[p.Name]; o != nil && o.Comment == p.Comment && slices.Equal(o.Rules, p.Rules) {
					pieces[i] = *o
					continue
				}
				c.assembled = append(c.assembled, p.Name)
			}
			ac = &assembledChain{own: own, parent: parent, next: next, maxPieces: maxPieces, pieces: pieces}
			a.chains[name] = ac
		}
		ac.seen = c.call
		out = append(out, ac.pieces...)
	}
	return out, true
}

// Pieces. A target chain holding the rules of many policies is cut into
// pieces joined by "goto", so that a change to one policy rewrites the
// piece holding its rules, not the whole chain (nft's work and the
// kernel's grow with the rules a transaction writes). The first piece
// keeps the chain's name (the entry chain's verdict maps name it); a new
// piece starts before the first rule of a policy whose name's hash
// (pieceHash) ends with at least j zero bits (the chain's first policy
// excepted), and is named after the chain and that hash:
// "<chain>.p<12 hex digits>". A boundary thus depends on the policy found
// there only, never on its position: adding, changing or removing a
// policy changes the piece holding it (and, when it starts a piece, the
// "goto" ending the piece before), not the other pieces. Each piece but
// the last ends with "goto" the next one; the chain's own ending (a
// "goto" to the rest chain or the next tier) stays in the last. Since
// every step is a goto, a "return" in any piece returns where the chain
// would (the policies chain), and the rules are met in exactly the order
// of the uncut chain.
//
// The kernel refuses a ruleset in which a chain is more than 15 jumps or
// gotos (NFT_JUMP_STACK_SIZE 16; it counts a goto as a jump when it
// validates the table) from its base chain, so a chain is cut into at
// most maxPieces pieces (piecesPerChain): j is the smallest from
// minPieceBits on that gives no more pieces; average pieces thus hold 2^j
// policies, at least 4. j changes, and the whole chain with it, only when
// the chain's policies grow or shrink past such a limit.
const minPieceBits = 2

// maxPolicyDepth is the deepest a policy chain may be from the forward
// chain, in jumps and gotos: the kernel's 15, less 2 for what base chains
// may add before the policies chain.
const maxPolicyDepth = 13

// piecesPerChain returns how many pieces each target chain of a stage
// may have, given its tiers with rules and how many of them have a rest
// chain (at most). The policies chain is 1 jump from the forward chain,
// the first tier's entry chain 2; within a tier whose entry chain is at
// depth e, its target chains' pieces reach e+pieces, its rest chain one
// more, and the next tier's entry chain one more again. So the deepest
// chain is at 2 + tiers*pieces + rests + tiers-1.
func piecesPerChain(tiers, rests int) int {
	if tiers < 1 {
		return 1
	}
	return max(1, (maxPolicyDepth-1-rests-tiers)/tiers)
}

// pieceSuffix starts the suffix naming a piece.
const pieceSuffix = ".p"

// pieceHash is the hash of a policy's name that decides and names the
// pieces starting at it (48 bits: 12 hex digits).
func pieceHash(policy string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(policy))
	return h.Sum64() >> 16
}

// splitChain cuts ch into at most maxPieces pieces (see minPieceBits).
// A chain with no cut is returned as it is.
func splitChain(ch Chain, maxPieces int) []Chain {
	if maxPieces <= 1 {
		return []Chain{ch}
	}
	// The places a piece may start: the first rule of each policy but
	// the first, with the trailing zero bits of its hash.
	type cut struct {
		at   int
		bits int
		name string
	}
	var cuts []cut
	prev := ""
	for i, r := range ch.Rules {
		if r.Policy == "" || r.Policy == prev {
			continue
		}
		first := prev == ""
		prev = r.Policy
		h := pieceHash(r.Policy)
		z := bits.TrailingZeros64(h | 1<<48)
		if first || z < minPieceBits {
			continue
		}
		name := ch.Name + pieceSuffix + fmt.Sprintf("%012x", h)
		if slices.ContainsFunc(cuts, func(c cut) bool { return c.name == name }) {
			continue // a policy's rules in two places, or the same hash twice
		}
		cuts = append(cuts, cut{i, z, name})
	}
	j := minPieceBits
	for ; ; j++ {
		n := 1
		for _, c := range cuts {
			if c.bits >= j {
				n++
			}
		}
		if n <= maxPieces {
			break
		}
	}
	var out []Chain
	start, name, comment := 0, ch.Name, ch.Comment
	for _, c := range cuts {
		if c.bits < j {
			continue
		}
		rules := make([]Rule, 0, c.at-start+1)
		rules = append(append(rules, ch.Rules[start:c.at]...), Rule{Expr: "goto " + c.name})
		out = append(out, Chain{Name: name, Comment: comment, Rules: rules})
		start, name, comment = c.at, c.name, clip(ch.Comment+", from policy "+ch.Rules[c.at].Policy)
	}
	if out == nil {
		return []Chain{ch}
	}
	return append(out, Chain{Name: name, Comment: comment, Rules: ch.Rules[start:len(ch.Rules):len(ch.Rules)]})
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

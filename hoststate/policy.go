package hoststate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
	"github.com/romana/romana/policy"
)

// Policy chains. The policies chain (ChainPolicies) sends packets from this
// host's blocks through ChainPolicyEgress and packets to them through
// ChainPolicyIngress, the stages' entry chains. The policies chain ends
// with PoliciesEnd. The policies-egress chain (ChainPoliciesEgress, the
// input chain's) holds the same egress rules and PoliciesEnd, and no
// ingress rule. When there are no policies both are empty and the
// policy-* chains do not exist.
//
// Dispatch. A stage's entry chain does not hold every policy's rules: it
// sends a packet, by the address of its endpoint (the destination in the
// ingress stage, the source in the egress stage), to a chain holding only
// the rules of the policies that apply to that endpoint:
//
//  1. first the rules of policies applied to all endpoints (all, or
//     host: this host) that come before every policy applied to a tenant
//     or segment in precedence order;
//  2. then, per network with such policies, one lookup in an anonymous
//     verdict map keyed on the address masked to its tenant and segment
//     bits (plan.SegmentMask: "ip daddr & 255.0.255.0 vmap { ... }"), whose
//     elements go to a target chain per tenant-and-segment a policy
//     applies to, and one keyed on the tenant bits (plan.TenantMask) going
//     to a target chain per tenant a policy applies to;
//  3. a packet whose tenant and segment no policy names goes on to the
//     rest chain: the remaining rules of policies applied to all.
//
// A target chain holds, in precedence order, the rules of the policies
// applied to its segment, to its tenant and to all endpoints (from the
// first policy applied to a tenant or segment on); when policies applied
// to all remain after its own last rule, it ends with "goto" the rest
// chain, which evaluates again the rules of policies applied to all
// between the two (they did not match the first time and cannot now). A
// packet thus meets the rules of the policies that apply to it and never
// those of another tenant's or segment's policies, whatever their number.
// Target chains are named ChainPolicyEgress or ChainPolicyIngress followed
// by ".<network>.t<tenant id>" and, for a segment, ".s<segment id>"; the
// rest chains by ".rest". A target chain of many policies is cut into
// pieces joined by "goto" (splitChain, assemble.go), named after it with
// ".p<hash>", so that one policy change rewrites a piece of a few
// policies' rules, not the chain. A plan without segment bits has no segment
// lookup (a segment target is its tenant's). The verdict maps are
// anonymous, part of the entry chain's rules, so every policy object is in
// a policy chain (IsPolicyChain) and a policy change rewrites only those.
//
// "goto" keeps the semantics: a target or rest chain returns (an egress
// allow, or no match) to the policies chain, as the entry chain would,
// which then goes on to the ingress stage or to tenant isolation.
//
// Tiers. Each tier with rules in a stage (policy.Tiers: admin, default,
// baseline) has a dispatch of its own as above. The default tier's chains
// have the names above; the admin and baseline tiers' insert "-admin" or
// "-baseline" after the stage's entry name ("policy-ingress-admin",
// "policy-ingress-baseline.net1.t2.s0"), so a host without admin or
// baseline policies renders as before tiers existed. The policies chain
// jumps to the first tier's entry chain; every chain of a tier that would
// end without a verdict (the entry chain without a rest chain, a target
// chain not going to the rest chain, the rest chain) ends with "goto" the
// next tier's entry chain when there is one; a pass rule's verdict is
// "goto" the next tier's entry chain, "return" in the last tier. Since
// every step after the policies chain's jump is a goto, "return" (an
// egress allow, a pass or no match in the last tier) still goes back to
// the policies chain: an egress allow ends the whole egress stage.
//
// Address sets. The rules of a policy naming an address set (as target
// or peer) match "@" policy.AddressSetName(set, family), a named set of
// the table that holds the set's members of that family. Which sets
// exist depends on the rules only, their elements on the model's
// members, read at every assembly: a change of members is a change of
// elements, never of rules or chains, and recompiles no policy.
const (
	ChainPolicyEgress  = "policy-egress"
	ChainPolicyIngress = "policy-ingress"
	PoliciesEnd        = "return"
)

// restSuffix ends the name of a stage's rest chain.
const restSuffix = ".rest"

// IsPolicyChain reports whether a chain holds only policy rules: the
// firewall adapter rewrites these alone when nothing else changed.
func IsPolicyChain(name string) bool {
	return name == ChainPolicies || name == ChainPoliciesEgress || strings.HasPrefix(name, "policy-")
}

// PolicyChainStage returns the stage (api.DirectionEgress or
// api.DirectionIngress) whose rules a policy chain holds, or "" for
// other chains (the policies chain among them).
func PolicyChainStage(chain string) string {
	switch {
	case strings.HasPrefix(chain, ChainPolicyEgress):
		return api.DirectionEgress
	case strings.HasPrefix(chain, ChainPolicyIngress):
		return api.DirectionIngress
	}
	return ""
}

// logRate limits logged drops per rule.
const logRate = "limit rate 10/second burst 20 packets"

// addPolicies compiles the model's policies for this host into the
// ruleset's policy chains and reports the compiler's problems. cache holds
// the policies compiled by earlier calls (see Compiler).
func addPolicies(rs *Ruleset, in *inputs, cache *Compiler) {
	if in.m.PolicyCount() == 0 {
		cache.reset()
		return
	}
	local := policy.Blocks(in.m, in.host.Name)
	if len(local) == 0 {
		return
	}
	if cache == nil {
		cache = &Compiler{}
	}
	compiled := cache.compile(in.m, in.host.Name, local)
	defer cache.asm.sweep(cache.call)
	// What policies hold besides their chains' rules (problems, sets),
	// in precedence order.
	extras := make([]*compiledPolicy, 0, len(cache.idx.extras))
	for p := range cache.idx.extras {
		extras = append(extras, p)
	}
	slices.SortFunc(extras, precedence)
	for _, p := range extras {
		if p.problem != "" {
			in.problem("%s", p.problem)
		}
		for _, x := range p.missing {
			in.problem("%s", x)
		}
	}
	pc, ec := rs.Chain(ChainPolicies), rs.Chain(ChainPoliciesEgress)
	if pc == nil || ec == nil {
		return
	}
	tiers := [2][]int{cache.idx.present(0), cache.idx.present(1)}
	for _, l := range local {
		r := Rule{Expr: fmt.Sprintf("%s saddr %s jump %s", l.Family(), l.Prefix, tierEntry(0, tiers[0][0]))}
		pc.Rules = append(pc.Rules, r)
		ec.Rules = append(ec.Rules, r)
	}
	ec.Rules = append(ec.Rules, Rule{Expr: PoliciesEnd})
	for _, l := range local {
		pc.Rules = append(pc.Rules, Rule{Expr: fmt.Sprintf("%s daddr %s jump %s", l.Family(), l.Prefix, tierEntry(1, tiers[1][0]))})
	}
	pc.Rules = append(pc.Rules, Rule{Expr: PoliciesEnd})
	// The peer sets, shared by content.
	var sets []Set
	seen := map[string]bool{}
	for _, p := range extras {
		for _, st := range p.sets {
			if !seen[st.Name] {
				seen[st.Name] = true
				sets = append(sets, st)
			}
		}
	}
	// The address sets the rules name, one nft set per family, holding
	// the set's members of that family now (a set the model does not
	// hold is empty, and a problem).
	var refs []addrSetRef
	for _, p := range extras {
		for _, r := range p.addrSets {
			if !slices.Contains(refs, r) {
				refs = append(refs, r)
			}
		}
	}
	for _, r := range refs {
		sets = append(sets, addressSet(in.m, r))
	}
	if len(sets) > 0 {
		rs.Sets = append(slices.Clone(rs.Sets), sets...)
		slices.SortFunc(rs.Sets, func(a, b Set) int { return strings.Compare(a.Name, b.Name) })
	}
	// Policy chains go right after the policies-egress chain, in one new
	// list sized by the last call's (thousands of chains: copying them
	// as a list grows is most of what assembling costs when little
	// changed).
	i := 0
	for i < len(rs.Chains) && rs.Chains[i].Name != ChainPoliciesEgress {
		i++
	}
	i = min(i+1, len(rs.Chains))
	chains := make([]Chain, 0, len(rs.Chains)+cache.policyChains+16)
	chains = append(chains, rs.Chains[:i]...)
	chains = stageChains(chains, cache, 0, tiers[0], compiled, local, in.m)
	chains = stageChains(chains, cache, 1, tiers[1], compiled, local, in.m)
	cache.policyChains = len(chains) - i
	rs.Chains = append(chains, rs.Chains[i:]...)
}

// addressSet is the nft set of an address set's members of one family.
func addressSet(m *model.Model, r addrSetRef) Set {
	_, keyType := familyKey(r.fam)
	st := Set{Name: policy.AddressSetName(r.name, r.fam), KeyType: keyType, Comment: clip("address set " + r.name)}
	// Members: the set's addresses and its pods' (model.AddressSetMembers),
	// unmapped, sorted, distinct.
	for _, a := range m.AddressSetMembers(r.name) {
		if a.IsValid() && a.Is4() == (r.fam == "ip") {
			st.Elements = append(st.Elements, a.String())
		}
	}
	return st
}

// presentTiers returns the ranks (policy.TierRank) of the tiers with
// rules in the stage, in order; just the default tier when none has.
func presentTiers(stage int, pols []*compiledPolicy) []int {
	var out []int
	for _, p := range pols { // in precedence order: by tier first
		if len(p.stages[stage]) > 0 && (len(out) == 0 || out[len(out)-1] != p.tier) {
			out = append(out, p.tier)
		}
	}
	if len(out) == 0 {
		out = []int{policy.TierRank(api.TierDefault)}
	}
	return out
}

// tierEntry names a tier's entry chain in a stage: ChainPolicyEgress or
// ChainPolicyIngress for the default tier, followed by "-admin" or
// "-baseline" for the others.
func tierEntry(stage, tier int) string {
	name := stages[stage].entry
	if t := policy.Tiers[tier]; t != api.TierDefault {
		name += "-" + t
	}
	return name
}

// stages: index 0 is egress, 1 ingress.
var stages = [2]struct {
	name, entry, field, comment string
}{
	{policy.StageEgress, ChainPolicyEgress, "saddr", "egress policies: packets from this host's endpoints"},
	{policy.StageIngress, ChainPolicyIngress, "daddr", "ingress policies: packets to this host's endpoints"},
}

// target is a tenant or a tenant's segment that policies apply to, in one
// network: its masked match and the positions of those policies' rules in
// the stage.
type target struct {
	key     matchKey
	network int // index in the host's blocks
	segment bool
	tenant  uint64
	seg     uint64
	rules   []int
	parent  *target // a segment's tenant, when policies apply to it
}

type matchKey struct{ mask, value netip.Addr }

func (t *target) chain(entry string, networks []policy.Local) string {
	s := entry + "." + networks[t.network].Network + ".t" + strconv.FormatUint(t.tenant, 10)
	if t.segment {
		s += ".s" + strconv.FormatUint(t.seg, 10)
	}
	return s
}

// stageChains appends one stage's chains to out, tier after tier (tiers: the
// ranks of those with rules), from the compiled policies in precedence
// order: a tier without rules applied to all endpoints from c's index
// and cache (tierChainsCached), any other whole (tierChains).
func stageChains(out []Chain, c *Compiler, stage int, tiers []int, pols []*compiledPolicy, local []policy.Local, m *model.Model) []Chain {
	nets := make([]*model.Network, len(local))
	for i, l := range local {
		nets[i] = m.Network(l.Network)
	}
	rests := 0
	for _, tier := range tiers {
		if t := c.idx.tiers[stage][tier]; t != nil && t.generic > 0 {
			rests++
		}
	}
	maxPieces := piecesPerChain(len(tiers), rests)
	for i, tier := range tiers {
		next := ""
		if i+1 < len(tiers) {
			next = tierEntry(stage, tiers[i+1])
		}
		t := c.idx.tiers[stage][tier]
		if t == nil {
			// No rules: the default tier's entry chain alone.
			out = append(out, tierChains(stage, tier, maxPieces, next, nil, local, m)...)
			continue
		}
		if t.generic == 0 {
			var ok bool
			if out, ok = c.tierChainsCached(out, stage, tier, maxPieces, next, t.byKey, local, nets, m); ok {
				continue
			}
		}
		var rules []*compiledRule
		for _, p := range pols {
			if p.tier == tier {
				for j := range p.stages[stage] {
					rules = append(rules, &p.stages[stage][j])
				}
			}
		}
		out = append(out, tierChains(stage, tier, maxPieces, next, rules, local, m)...)
	}
	return out
}

// tierChains builds one tier's entry, target and rest chains in a stage
// (see the comment on ChainPolicyEgress) from its rules in precedence
// order. next is the next tier's entry chain, or "" for the last tier:
// every chain that would end without a verdict goes to it, and so do the
// tier's pass rules. Target chains are cut into at most maxPieces pieces
// (splitChain).
func tierChains(stage, tier, maxPieces int, next string, rules []*compiledRule, local []policy.Local, m *model.Model) []Chain {
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
	blockNet := map[netip.Prefix]int{}
	for i, l := range local {
		blockNet[l.Prefix] = i
	}
	nets := make([]*model.Network, len(local))
	for i, l := range local {
		nets[i] = m.Network(l.Network)
	}
	// Classify: a rule applied to all (its target is a block) or to a
	// tenant or segment (a masked match).
	targets := map[matchKey]*target{}
	genericNet := make([]int, len(rules)) // the block's index; -1 for targeted rules
	first := len(rules)                   // position of the first targeted rule
	for pos, r := range rules {
		t := r.rule.Target
		if !t.Mask.IsValid() {
			n, ok := blockNet[t.Prefix]
			if !ok {
				n = -2 // matches none of this host's blocks: evaluated in the entry and rest chains only
			}
			genericNet[pos] = n
			continue
		}
		genericNet[pos] = -1
		first = min(first, pos)
		k := matchKey{t.Mask, t.Value}
		tg := targets[k]
		if tg == nil {
			tg = newTarget(k, nets)
			targets[k] = tg
		}
		tg.rules = append(tg.rules, pos)
	}
	var list []*target
	for _, tg := range targets {
		if tg.network < 0 {
			// Not a tenant or segment match of a local network (cannot
			// happen: the compiler targets only those). Evaluate it in
			// the rest chain, which every packet without a target meets;
			// packets dispatched elsewhere cannot match it.
			for _, pos := range tg.rules {
				genericNet[pos] = -2
			}
			continue
		}
		list = append(list, tg)
	}
	slices.SortFunc(list, func(a, b *target) int {
		return cmp.Or(cmp.Compare(a.network, b.network), cmp.Compare(a.tenant, b.tenant), compareBool(a.segment, b.segment), cmp.Compare(a.seg, b.seg))
	})
	for _, tg := range list {
		if tg.segment {
			tk := matchKey{nets[tg.network].Plan.TenantMask(), tg.key.value}
			tk.value = maskAddr(tg.key.value, tk.mask)
			tg.parent = targets[tk]
		}
	}
	// Rules applied to all after the first targeted one: the rest chain,
	// and per network (for target chains).
	var restRules []int
	genericAfter := make([][]int, len(local))
	for pos := first; pos < len(rules); pos++ {
		n := genericNet[pos]
		if n == -1 {
			continue
		}
		restRules = append(restRules, pos)
		if n >= 0 {
			genericAfter[n] = append(genericAfter[n], pos)
		}
	}
	restName := entryName + restSuffix
	// nftOf is a rule's nft rules, a pass rule's verdict filled in.
	nftOf := func(pos int) []Rule {
		r := rules[pos]
		if r.rule.Action != api.ActionPass {
			return r.nft
		}
		out := slices.Clone(r.nft)
		last := &out[len(out)-1]
		last.Expr = strings.TrimSuffix(last.Expr, policy.PassVerdict) + passVerdict
		return out
	}
	render := func(c *Chain, positions []int) {
		n := len(c.Rules) + 1 // and a goto
		for _, pos := range positions {
			n += len(rules[pos].nft)
		}
		c.Rules = slices.Grow(c.Rules, n)
		for _, pos := range positions {
			c.Rules = append(c.Rules, nftOf(pos)...)
		}
	}
	entry := Chain{Name: entryName, Comment: tierNote + st.comment}
	for pos := 0; pos < first; pos++ {
		entry.Rules = append(entry.Rules, nftOf(pos)...)
	}
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
			// Elements are separated by " , ": knftables' fake reads the
			// word after "goto" as a chain name.
			entry.Rules = append(entry.Rules, Rule{Expr: fmt.Sprintf("%s %s & %s vmap { %s }", l.Family(), st.field, mask, strings.Join(elems, " , "))})
		}
	}
	if len(restRules) > 0 {
		entry.Rules = append(entry.Rules, Rule{Expr: "goto " + restName})
	} else {
		entry.Rules = append(entry.Rules, fallOff...)
	}
	out := []Chain{entry}
	var tenants map[uint64]api.Tenant // by ID, made when a comment is needed
	for _, tg := range list {
		c := Chain{Name: tg.chain(entryName, local)}
		own := tg.rules
		if tg.parent != nil {
			own = mergeSorted(own, tg.parent.rules)
		}
		last := own[len(own)-1]
		generic := genericAfter[tg.network]
		cut, _ := slices.BinarySearch(generic, last)
		render(&c, mergeSorted(own, generic[:cut]))
		if cut < len(generic) {
			c.Rules = append(c.Rules, Rule{Expr: "goto " + restName})
		} else {
			c.Rules = append(c.Rules, fallOff...)
		}
		if tenants == nil {
			tenants = map[uint64]api.Tenant{}
			for _, t := range m.Tenants() {
				tenants[t.ID] = t
			}
		}
		c.Comment = clip(tierNote + targetComment(st.name, tg, m, nets[tg.network], tenants))
		out = append(out, splitChain(c, maxPieces)...)
	}
	if len(restRules) > 0 {
		c := Chain{Name: restName, Comment: tierNote + st.name + " policies applied to all, after the first applied to a tenant or segment"}
		render(&c, restRules)
		c.Rules = append(c.Rules, fallOff...)
		out = append(out, c)
	}
	return out
}

func newTarget(k matchKey, nets []*model.Network) *target {
	tg := &target{key: k, network: -1}
	for i, n := range nets {
		if n == nil || !n.Plan.Prefix().Contains(k.value) {
			continue
		}
		d, err := n.Plan.Decode(k.value)
		if err != nil {
			continue
		}
		switch k.mask {
		case n.Plan.TenantMask():
		case n.Plan.SegmentMask():
			tg.segment = true
		default:
			continue
		}
		tg.network, tg.tenant, tg.seg = i, d.Tenant, d.Segment
		break
	}
	return tg
}

// targetComment names the tenant (and segment) of a target chain;
// tenants are the model's by ID (the model keeps their IDs unique).
func targetComment(stage string, tg *target, m *model.Model, n *model.Network, tenants map[uint64]api.Tenant) string {
	name := "tenant id " + strconv.FormatUint(tg.tenant, 10)
	if t, ok := tenants[tg.tenant]; ok && n.Admits(t.Name) {
		name = "tenant " + t.Name
		if tg.segment {
			name += " segment id " + strconv.FormatUint(tg.seg, 10)
			for _, s := range m.Segments(t.Name) {
				if s.ID == tg.seg {
					name = "tenant " + t.Name + " segment " + s.Name
				}
			}
		}
	}
	return clip(fmt.Sprintf("%s policies of %s in network %s", stage, name, n.Name))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// mergeSorted merges two ascending lists of distinct positions.
func mergeSorted(a, b []int) []int {
	out := make([]int, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			out = append(out, a[i])
			i++
		default:
			out = append(out, b[j])
			j++
		}
	}
	return out
}

// maskAddr returns a & m.
func maskAddr(a, m netip.Addr) netip.Addr {
	x, y := a.AsSlice(), m.AsSlice()
	for i := range x {
		x[i] &= y[i]
	}
	out, _ := netip.AddrFromSlice(x)
	return out
}

// renderRule renders a compiled rule; a deny rule of a logging policy is
// preceded by a rate-limited log rule with the same match.
func renderRule(r policy.Rule) []Rule {
	var out []Rule
	if r.Log {
		out = append(out, Rule{Expr: fmt.Sprintf("%s %s log prefix %q", r.Match(), logRate, r.LogPrefix()),
			Comment: clip(r.Comment() + " log"), Policy: r.Policy})
	}
	return append(out, Rule{Expr: r.Expr(), Comment: clip(r.Comment()), Policy: r.Policy})
}

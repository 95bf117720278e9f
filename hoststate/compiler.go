package hoststate

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
	"github.com/romana/romana/policy"
)

// Compiler computes a host's firewall like ComputeFirewall, keeping what
// it computed for the next call, so that a change to one policy among
// thousands costs about what that policy touches:
//
//   - every policy compiled (and rendered): a policy whose value and
//     dependencies (policy.Deps: the tenants, segments and hosts it names)
//     are unchanged is not compiled again (address sets' members are no
//     dependency: rules name the sets, whose elements are filled in at
//     every call). Dependencies are computed again only when the model's
//     tenants (and segments) or hosts changed; otherwise only the
//     policies the model's journal names (model.PolicyChanges) are looked
//     at, not the other thousands;
//   - the policies in precedence order, updated by insertion and removal;
//   - the target chains of the dispatch (assemble.go), each kept with the
//     policies it was assembled from: a chain whose policies are the same
//     compiled values is not assembled again.
//
// Changing the networks or this host's blocks drops the whole cache. It
// is pure data, no I/O; not safe for concurrent use (the agent's loop
// owns one). The zero value is ready to use; a nil *Compiler caches
// nothing.
type Compiler struct {
	host, global string
	byName       map[string]*compiledPolicy
	// order holds byName's policies in precedence order.
	order []*compiledPolicy
	// idx indexes them by stage, tier and target (index.go).
	idx policyIndex
	// The model and its policy generation (model.PolicyGeneration) when
	// order was last brought up to date: the policies changed since are
	// the model's PolicyChanges.
	model     *model.Model
	policyGen uint64
	// The model's lists when order was last brought up to date: the
	// model shares them until their kind changes (model.Model), so their
	// identity tells whether anything of that kind changed.
	tenants []api.Tenant
	hosts   []api.Host
	// sets is the model's address sets at the last call; setsChanged
	// tells whether they changed since the call before.
	sets        []api.AddressSet
	setsChanged bool
	// asm is what the dispatch's assembly keeps (assemble.go).
	asm assembly
	// policyChains is the number of policy chains the last call made,
	// to size the next call's list.
	policyChains int
	// tenantChains are the tenants' isolation chains (isolation.go).
	tenantChains tenantChainCache
	call         uint64 // calls so far
	compiles     int    // policies compiled so far, for tests
	// assembled names the target chains the last call assembled (not
	// reused), for tests.
	assembled []string
}

// compiledPolicy is one policy compiled for the host and rendered. Its
// rules are never modified once made (only missing and seen are kept up
// to date): a change makes a new one, so its identity tells whether the
// policy or its rules changed.
type compiledPolicy struct {
	raw      api.Policy // as the model holds it, to tell a change
	deps     string
	tier     int // policy.TierRank
	priority int // 0 replaced by the default
	problem  string
	stages   [2][]compiledRule // egress, ingress; in the policy's order
	sets     []Set             // the named sets of its rules' peers
	// addrSets are the address sets its rules name, by family: their
	// names, not their members (which are read at every assembly).
	addrSets []addrSetRef
	// setRefs are the address sets the policy names (policy.SetRefs);
	// missing, the problems of those the model lacked at the last call.
	setRefs []string
	missing []string
	// keys are, per stage, the targets (masked matches) of its rules, each
	// once, in the order of their first rule; generic tells whether any
	// rule of the stage applies to all endpoints (its target a block).
	keys    [2][]matchKey
	generic [2]bool
	seen    uint64 // the last call that found it in the model
}

// addrSetRef is an address set a rule names, in one family ("ip" or "ip6").
type addrSetRef struct{ name, fam string }

// compiledRule is one compiled rule and its nft rules (with the log rule).
type compiledRule struct {
	rule policy.Rule
	nft  []Rule
}

// Firewall returns the ruleset of host and the problems found computing
// it (with the model's own), as ComputeFirewall does.
func (c *Compiler) Firewall(m *model.Model, host string, opts Options) (Ruleset, []string, error) {
	st, in, err := routing(m, host, opts)
	if err != nil {
		return Ruleset{}, nil, err
	}
	fw, problems := firewall(in, c)
	if opts.Flowtable {
		addFlowtable(&fw, in, st.Routes)
	}
	return fw, problems, nil
}

// Cached is the number of policies the compiler holds.
func (c *Compiler) Cached() int {
	if c == nil {
		return 0
	}
	return len(c.byName)
}

func (c *Compiler) reset() {
	if c != nil {
		*c = Compiler{compiles: c.compiles, tenantChains: c.tenantChains} // it checks its own inputs
	}
}

// sameList reports whether a and b are the same list of the model (not
// merely equal): non-empty, with the same array.
func sameList[T any](a, b []T) bool {
	return len(a) > 0 && len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// compile returns the model's policies compiled for host, in precedence
// order (tier, ascending priority, ties by name), reusing those cached.
// The list returned is the compiler's own: callers must not keep it.
func (c *Compiler) compile(m *model.Model, host string, local []policy.Local) []*compiledPolicy {
	global := networksKey(m, local)
	if c.host != host || c.global != global {
		c.reset()
		c.host, c.global = host, global
	}
	c.call++
	c.assembled = c.assembled[:0]
	tenants, hosts, sets := m.Tenants(), m.Hosts(), m.AddressSets()
	c.setsChanged = c.byName == nil || !sameList(sets, c.sets) && (len(sets) > 0 || len(c.sets) > 0)
	c.sets = sets
	depsSame := c.byName != nil && sameList(tenants, c.tenants) && sameList(hosts, c.hosts)
	if !sameList(tenants, c.tenants) {
		c.asm.reset() // chain comments name tenants and segments
	}
	c.tenants, c.hosts = tenants, hosts
	// Only policies changed (or nothing): the model names them.
	var changed []string
	incremental := false
	if depsSame && c.model == m {
		changed, incremental = m.PolicyChanges(c.policyGen)
	}
	c.model, c.policyGen = m, m.PolicyGeneration()
	if incremental && len(changed) == 0 {
		c.updateMissing(m)
		return c.order
	}
	if c.byName == nil {
		c.byName = make(map[string]*compiledPolicy, m.PolicyCount())
	}
	var changes []change
	compile := func(p api.Policy, old *compiledPolicy, deps string) {
		n := compileOne(m, p, host, local, deps)
		n.seen = c.call
		c.compiles++
		c.byName[p.Name] = n
		changes = append(changes, change{old, n})
	}
	if incremental {
		// The journal may name a policy more than once: the model's value
		// now is what counts, and a second mention finds it compiled
		// (samePolicy) or already gone.
		for _, name := range changed {
			p, ok := m.Policy(name)
			e := c.byName[name]
			switch {
			case !ok && e != nil: // gone
				delete(c.byName, name)
				changes = append(changes, change{e, nil})
			case ok && (e == nil || !samePolicy(e.raw, p)): // new or changed
				compile(p, e, policy.Deps(m, p))
			}
		}
	} else {
		pols := m.Policies()
		for _, p := range pols { // sorted by name, one per name
			e := c.byName[p.Name]
			deps := policy.Deps(m, p)
			if e != nil && samePolicy(e.raw, p) && deps == e.deps {
				e.seen = c.call
				continue
			}
			compile(p, e, deps)
		}
		if len(c.byName) > len(pols) {
			for name, e := range c.byName {
				if e.seen != c.call {
					delete(c.byName, name)
					changes = append(changes, change{e, nil})
				}
			}
		}
	}
	if len(changes) > 64 || len(changes) > 0 && c.order == nil {
		c.order = make([]*compiledPolicy, 0, len(c.byName))
		for _, p := range c.byName {
			c.order = append(c.order, p)
		}
		slices.SortFunc(c.order, precedence)
		c.idx.rebuild(c.order)
	} else {
		for _, ch := range changes {
			c.idx.update(ch)
			if ch.old != nil {
				i, ok := slices.BinarySearchFunc(c.order, ch.old, precedence)
				if ok && ch.new != nil && precedence(ch.old, ch.new) == 0 {
					c.order[i] = ch.new
					continue
				}
				if ok {
					c.order = slices.Delete(c.order, i, i+1)
				}
			}
			if ch.new != nil {
				i, _ := slices.BinarySearchFunc(c.order, ch.new, precedence)
				c.order = slices.Insert(c.order, i, ch.new)
			}
		}
	}
	c.updateMissing(m)
	return c.order
}

// change is one policy compiled again (old and new), new (old nil) or
// gone (new nil).
type change struct{ old, new *compiledPolicy }

// updateMissing finds again the address sets that policies naming sets
// lack, when the sets changed (a new policy found its own in compileOne).
func (c *Compiler) updateMissing(m *model.Model) {
	if !c.setsChanged {
		return
	}
	for p := range c.idx.extras {
		if len(p.setRefs) > 0 {
			p.missing = policy.MissingSets(m, p.raw)
		}
	}
}

// precedence orders compiled policies: tier, ascending priority, name.
func precedence(a, b *compiledPolicy) int {
	return cmp.Or(cmp.Compare(a.tier, b.tier), cmp.Compare(a.priority, b.priority), strings.Compare(a.raw.Name, b.raw.Name))
}

func compileOne(m *model.Model, p api.Policy, host string, local []policy.Local, deps string) *compiledPolicy {
	e := &compiledPolicy{raw: p, deps: deps, tier: policy.TierRank(p.Tier), priority: p.Priority}
	if e.priority == 0 {
		e.priority = api.DefaultPriority
	}
	eg, in, problem := policy.CompilePolicy(m, p, host, local)
	e.problem = problem
	if problem == "" {
		if e.setRefs = policy.SetRefs(p); len(e.setRefs) > 0 {
			e.missing = policy.MissingSets(m, p)
		}
	}
	for i, rules := range [][]policy.Rule{eg, in} {
		e.stages[i] = make([]compiledRule, len(rules))
		for j, r := range rules {
			e.stages[i][j] = compiledRule{rule: r, nft: renderRule(r)}
			if t := r.Target; t.Mask.IsValid() {
				if k := (matchKey{t.Mask, t.Value}); !slices.Contains(e.keys[i], k) {
					e.keys[i] = append(e.keys[i], k)
				}
			} else {
				e.generic[i] = true
			}
			for _, m := range []*policy.AddrMatch{&r.Target, r.Peer} {
				if m != nil && m.AddressSet != "" && !slices.Contains(e.addrSets, addrSetRef{m.AddressSet, r.Family}) {
					e.addrSets = append(e.addrSets, addrSetRef{m.AddressSet, r.Family})
				}
			}
			if r.Peer != nil && r.Peer.Set != "" && !slices.ContainsFunc(e.sets, func(s Set) bool { return s.Name == r.Peer.Set }) {
				_, keyType := familyKey(r.Family)
				e.sets = append(e.sets, Set{Name: r.Peer.Set, KeyType: keyType, Interval: true,
					Comment: "policy peers (named by their content)", Elements: r.Peer.SetElements()})
			}
		}
	}
	return e
}

// familyKey returns the nft family and address type of "ip" or "ip6".
func familyKey(fam string) (proto, keyType string) {
	if fam == "ip6" {
		return "ip6", "ipv6_addr"
	}
	return "ip", "ipv4_addr"
}

// networksKey describes what every policy's compilation reads: the
// networks (plans and admitted tenants) and this host's blocks.
func networksKey(m *model.Model, local []policy.Local) string {
	var b strings.Builder
	for _, n := range m.Networks() {
		writeNetworkKey(&b, n)
		b.WriteByte(';')
	}
	for _, l := range local {
		fmt.Fprintf(&b, "%s %s;", l.Network, l.Prefix)
	}
	return b.String()
}

// writeNetworkKey writes what the compilations read of network n: its
// name, plan and admitted tenants.
func writeNetworkKey(b *strings.Builder, n *model.Network) {
	fmt.Fprintf(b, "%q %s %v %q", n.Name, n.Plan.Prefix(), n.Plan.Fields(), n.Tenants)
}

// samePolicy reports whether a and b are equal. The model keeps an
// unchanged policy's value as it is, slices included, so comparing the
// slices' arrays settles most cases without reading them.
func samePolicy(a, b api.Policy) bool {
	if a.Name != b.Name || a.Priority != b.Priority || a.Tier != b.Tier || a.Log != b.Log || a.Description != b.Description {
		return false
	}
	if sameSlice(a.Rules, b.Rules) && sameSlice(a.AppliedTo, b.AppliedTo) && sameSlice(a.Direction, b.Direction) {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || unsafe.SliceData(a) == unsafe.SliceData(b))
}

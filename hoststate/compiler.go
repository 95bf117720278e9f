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

// Compiler computes a host's firewall like ComputeFirewall, keeping every
// policy compiled (and rendered) for the next call: a policy whose value
// and dependencies (policy.Deps: the tenants, segments and hosts it names)
// are unchanged is not compiled again (address sets' members are no
// dependency: rules name the sets, whose elements are filled in at every
// call), so a change to one policy among
// thousands costs the compilation of that one policy and the assembly of
// the chains. Changing the networks or this host's blocks drops the whole
// cache. It is pure data, no I/O; not safe for concurrent use (the agent's
// loop owns one). The zero value is ready to use; a nil *Compiler caches
// nothing.
type Compiler struct {
	host, global string
	byName       map[string]*compiledPolicy
	compiles     int // policies compiled so far, for tests
}

// compiledPolicy is one policy compiled for the host and rendered.
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
		c.byName = nil
	}
}

// compile returns the policies compiled for host, in precedence order
// (tier, ascending priority, ties by name), reusing those cached.
func (c *Compiler) compile(m *model.Model, host string, local []policy.Local, pols []api.Policy) []*compiledPolicy {
	if c == nil {
		c = &Compiler{}
	}
	global := networksKey(m, local)
	if c.host != host || c.global != global {
		c.host, c.global, c.byName = host, global, nil
	}
	next := make(map[string]*compiledPolicy, len(pols))
	out := make([]*compiledPolicy, 0, len(pols))
	for _, p := range pols { // sorted by name, one per name
		deps := policy.Deps(m, p)
		e := c.byName[p.Name]
		if e == nil || e.deps != deps || !samePolicy(e.raw, p) {
			e = compileOne(m, p, host, local, deps)
			c.compiles++
		}
		next[p.Name] = e
		out = append(out, e)
	}
	c.byName = next
	slices.SortFunc(out, func(a, b *compiledPolicy) int {
		return cmp.Or(cmp.Compare(a.tier, b.tier), cmp.Compare(a.priority, b.priority), strings.Compare(a.raw.Name, b.raw.Name))
	})
	return out
}

func compileOne(m *model.Model, p api.Policy, host string, local []policy.Local, deps string) *compiledPolicy {
	e := &compiledPolicy{raw: p, deps: deps, tier: policy.TierRank(p.Tier), priority: p.Priority}
	if e.priority == 0 {
		e.priority = api.DefaultPriority
	}
	eg, in, problem := policy.CompilePolicy(m, p, host, local)
	e.problem = problem
	for i, rules := range [][]policy.Rule{eg, in} {
		e.stages[i] = make([]compiledRule, len(rules))
		for j, r := range rules {
			e.stages[i][j] = compiledRule{rule: r, nft: renderRule(r)}
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
		fmt.Fprintf(&b, "%q %s %v %q;", n.Name, n.Plan.Prefix(), n.Plan.Fields(), n.Tenants)
	}
	for _, l := range local {
		fmt.Fprintf(&b, "%s %s;", l.Network, l.Prefix)
	}
	return b.String()
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

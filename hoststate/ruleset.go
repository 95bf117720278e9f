package hoststate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/romana/romana/api"
)

// Names in the host's nftables table. The table is "inet romana"; nothing
// outside it is ever touched.
const (
	Table = "romana"
	// ChainForward is the base chain of forwarded traffic: filter hook
	// forward, priority filter, policy accept (traffic not addressed to a
	// local Romana endpoint is none of our business).
	ChainForward = "forward"
	// ChainInput is the base chain of traffic from this host's endpoints
	// to the host itself (any of its addresses, the gateway's included):
	// filter hook input, priority filter, policy accept. Its first rule
	// returns every packet that did not arrive on an endpoint interface
	// (api.EndpointInterfacePrefixes): the uplink's, loopback's and the
	// host's own traffic are none of its business. See endpointInput.
	ChainInput = "input"
	// ChainPolicies is the extension point for policies: a regular chain
	// jumped to by the forward chain after the conntrack rules and before
	// tenant isolation. A policy rule that accepts or drops decides;
	// traffic that falls through (returns) meets tenant isolation. Compute
	// leaves it empty: the policy compiler fills State.Firewall's
	// ChainPolicies chain (and may add chains and maps of its own, named
	// "policy-*").
	ChainPolicies = "policies"
	// ChainPoliciesEgress is the input chain's way into the policies: a
	// regular chain, jumped to by the input chain last, holding only the
	// egress stage's dispatch (the ingress stage is about packets to
	// endpoints, which traffic to the host is not). Traffic that falls
	// through is accepted. Compute leaves it empty; the policy compiler
	// fills it beside ChainPolicies. It exists so that the input chain
	// reaches the egress stage's chains only: the kernel validates, at
	// every commit that adds a rule, every chain reachable from each base
	// chain once per path, so an input chain jumping to ChainPolicies
	// made every change pay for walking the ingress stage's chains twice
	// (docs/benchmarks.md, "The merged tree").
	ChainPoliciesEgress = "policies-egress"
)

// JumpPolicies is the forward chain's rule that enters ChainPolicies,
// after conntrack and before isolation; JumpPoliciesEgress the input
// chain's last rule, entering ChainPoliciesEgress. Both are in every
// ruleset.
const (
	JumpPolicies       = "jump " + ChainPolicies
	JumpPoliciesEgress = "jump " + ChainPoliciesEgress
)

// TenantChain and SegmentChain name the per-tenant and per-segment chains.
func TenantChain(tenantID uint64) string { return "tenant-" + strconv.FormatUint(tenantID, 10) }
func SegmentChain(tenantID, segmentID uint64) string {
	return "segment-" + strconv.FormatUint(tenantID, 10) + "-" + strconv.FormatUint(segmentID, 10)
}

// TenantMap names a network's verdict map from destination tenant to chain.
func TenantMap(network string) string { return "tenants-" + network }

// Ruleset is the desired content of table inet romana, as plain data. Sets
// come first, then maps, each sorted by name; chains are in a fixed order
// (forward, input, policies, policies-egress, the policy chains, then
// tenants by id, each followed by its
// segments).
// Every verdict map maps an address to a verdict.
type Ruleset struct {
	Sets   []Set
	Maps   []Map
	Chains []Chain
	// Flowtables is the software fast path (flowtable.go), empty unless
	// Options.Flowtable.
	Flowtables []Flowtable
}

// Set is a named set of keys (KeyType may be a concatenation, as
// "ipv4_addr . ether_addr"); Interval allows prefixes in keys.
type Set struct {
	Name     string
	KeyType  string
	Interval bool
	Comment  string
	Elements []string
}

// Chain is one nftables chain. Hook is set ("forward", "input") only for
// a base chain (type filter, priority filter, policy accept).
type Chain struct {
	Name    string
	Hook    string
	Comment string
	Rules   []Rule
}

// Rule is one rule in nft syntax (without the comment).
type Rule struct {
	Expr    string
	Comment string
	// Policy names the policy a rule of a policy chain was compiled from
	// ("" for every other rule); see Ruleset.Policies and WithoutPolicies.
	Policy string
}

// Map is a verdict map keyed by an address (KeyType "ipv4_addr" or "ipv6_addr").
type Map struct {
	Name     string
	KeyType  string
	Comment  string
	Elements []Element
}

// Element is one map element: an address and a verdict ("goto tenant-1").
type Element struct {
	Key     string
	Verdict string
}

// Chain returns the chain called name, or nil.
func (rs *Ruleset) Chain(name string) *Chain {
	for i := range rs.Chains {
		if rs.Chains[i].Name == name {
			return &rs.Chains[i]
		}
	}
	return nil
}

// RuleCount is the number of rules in all chains.
func (rs Ruleset) RuleCount() int {
	n := 0
	for _, c := range rs.Chains {
		n += len(c.Rules)
	}
	return n
}

// ElementCount is the number of elements in all sets and maps.
func (rs Ruleset) ElementCount() int {
	n := 0
	for _, s := range rs.Sets {
		n += len(s.Elements)
	}
	for _, m := range rs.Maps {
		n += len(m.Elements)
	}
	return n
}

// String renders the ruleset as an nft script that `nft -f` accepts and
// that reads like `nft list table inet romana`.
func (rs Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", Table)
	sep := ""
	for _, st := range rs.Sets {
		fmt.Fprintf(&b, "%s\tset %s {\n\t\ttype %s\n", sep, st.Name, st.KeyType)
		if st.Interval {
			b.WriteString("\t\tflags interval\n")
		}
		if st.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", st.Comment)
		}
		if len(st.Elements) > 0 {
			b.WriteString("\t\telements = {")
			for i, e := range st.Elements {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "\n\t\t\t%s", e)
			}
			b.WriteString(" }\n")
		}
		b.WriteString("\t}\n")
		sep = "\n"
	}
	for _, m := range rs.Maps {
		fmt.Fprintf(&b, "%s\tmap %s {\n\t\ttype %s : verdict\n", sep, m.Name, m.KeyType)
		if m.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", m.Comment)
		}
		if len(m.Elements) > 0 {
			b.WriteString("\t\telements = {")
			for i, e := range m.Elements {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "\n\t\t\t%s : %s", e.Key, e.Verdict)
			}
			b.WriteString(" }\n")
		}
		b.WriteString("\t}\n")
		sep = "\n"
	}
	for _, ft := range rs.Flowtables {
		fmt.Fprintf(&b, "%s\t%s", sep, ft)
		sep = "\n"
	}
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "%s\tchain %s {\n", sep, c.Name)
		if c.Hook != "" {
			fmt.Fprintf(&b, "\t\ttype filter hook %s priority filter; policy accept;\n", c.Hook)
		}
		if c.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", c.Comment)
		}
		for _, r := range c.Rules {
			b.WriteString("\t\t" + r.Expr)
			if r.Comment != "" {
				fmt.Fprintf(&b, " comment %q", r.Comment)
			}
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
		sep = "\n"
	}
	b.WriteString("}\n")
	return b.String()
}

// maxComment is nftables' limit on a comment's length.
const maxComment = 128

// clip shortens a comment to nftables' limit.
func clip(s string) string {
	if len(s) > maxComment {
		return s[:maxComment-3] + "..."
	}
	return s
}

// selectors for one address family.
func family(n *network) (proto, keyType string) {
	if n.Plan.Is4() {
		return "ip", "ipv4_addr"
	}
	return "ip6", "ipv6_addr"
}

// isolation compiles tenant isolation. It is enforced where traffic enters
// a local endpoint: the forward chain sends packets whose destination is in
// one of this host's blocks through the network's verdict map, keyed on the
// destination's tenant bits (daddr & tenant mask), to the tenant's chain,
// which accepts sources of the same tenant (mode tenant), of the same
// segment (mode segment, via per-segment chains) or anyone (mode none), and
// drops the rest. Rules: a few per network, one or two per tenant and
// network, per segment in segment mode; never per endpoint or per host.
// cache keeps the tenants' chains from call to call (nil: none kept).
func isolation(in *inputs, steering bool, cache *Compiler) Ruleset {
	// Anti-spoofing first, before conntrack: a packet claiming a source in
	// a Romana pool must arrive on the interface its source routes back
	// through (an endpoint's own veth, or the uplink for a remote one), or
	// an endpoint could borrow another tenant's address, also to inject
	// into a tracked connection. With service chains, packets carrying the
	// steering mark are exempt: one coming back from a service function
	// arrives on the function's interface, not its source's, and steering
	// marks only packets it has verified (chain.go).
	exempt := ""
	if steering {
		exempt = fmt.Sprintf(" meta mark & %#x == 0", MarkBit)
	}
	fwd := Chain{Name: ChainForward, Hook: "forward"}
	for _, n := range in.networks {
		proto, _ := family(n)
		fwd.Rules = append(fwd.Rules, Rule{
			Expr:    fmt.Sprintf("%s saddr %s%s fib saddr . iif oif missing counter drop", proto, n.Plan.Prefix(), exempt),
			Comment: "network " + n.Name + ": spoofed source",
		})
	}
	fwd.Rules = append(fwd.Rules, underlayRules(in, exempt)...)
	fwd.Rules = append(fwd.Rules,
		Rule{Expr: "ct state established,related accept"},
		Rule{Expr: "ct state invalid drop"},
		Rule{Expr: JumpPolicies},
	)
	policies := Chain{Name: ChainPolicies, Comment: "policies, evaluated before tenant isolation"}
	egress := Chain{Name: ChainPoliciesEgress, Comment: "egress policies of traffic from endpoints to this host"}
	var maps []Map
	used := map[uint64]bool{}
	for _, n := range in.networks {
		if !n.mine.IsValid() {
			continue // no endpoints of this network can be on this host
		}
		proto, keyType := family(n)
		m := Map{Name: TenantMap(n.Name), KeyType: keyType, Comment: "network " + n.Name + ": destination tenant to its chain"}
		for _, t := range in.tenants {
			if !n.Admits(t.Name) {
				continue
			}
			match, err := n.Plan.TenantMatch(t.ID)
			if err != nil {
				in.problem("tenant %q: id %d does not fit network %q: %v", t.Name, t.ID, n.Name, err)
				continue
			}
			m.Elements = append(m.Elements, Element{Key: match.Value.String(), Verdict: "goto " + TenantChain(t.ID)})
			used[t.ID] = true
		}
		maps = append(maps, m)
		fwd.Rules = append(fwd.Rules,
			Rule{Expr: fmt.Sprintf("%s daddr %s %s daddr & %s vmap @%s", proto, n.mine, proto, n.Plan.TenantMask(), m.Name)},
			Rule{Expr: fmt.Sprintf("%s daddr %s counter drop", proto, n.mine), Comment: "network " + n.Name + ": unknown tenant"})
	}
	rs := Ruleset{Sets: in.sources, Maps: maps, Chains: []Chain{fwd, endpointInput(exempt), policies, egress}}
	for i := range rs.Maps {
		rs.Maps[i].Comment = clip(rs.Maps[i].Comment)
	}
	clipChains(rs.Chains)
	rs.Chains = cache.appendTenantChains(rs.Chains, in, used)
	return rs
}

// clipChains clips the comments of chains and of their rules.
func clipChains(chains []Chain) {
	for i := range chains {
		c := &chains[i]
		c.Comment = clip(c.Comment)
		for j := range c.Rules {
			c.Rules[j].Comment = clip(c.Rules[j].Comment)
		}
	}
}

// endpointLinks is the set of endpoint interface name patterns, as nft
// writes it: { "romana*", "rv-*", "veth*" }.
func endpointLinks() string {
	var out []string
	for _, p := range api.EndpointInterfacePrefixes {
		out = append(out, fmt.Sprintf("%q", p+"*"))
	}
	return "{ " + strings.Join(out, ", ") + " }"
}

// ndpTypes are the ICMPv6 messages an endpoint sends its host to keep its
// link working: router and neighbour solicitation, neighbour
// advertisement, multicast listener reports and done (RFC 4861, 2710,
// 3810).
const ndpTypes = "{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld-listener-done, mld2-listener-report }"

// endpointInput is the input chain: packets from this host's endpoints to
// the host itself (its underlay address, the gateway, any address it
// holds), which the forward chain never sees. They meet the egress stage
// of the policies, as a packet from the same endpoint to another host
// does; the ingress stage and tenant isolation are about packets to
// endpoints, so they do not apply (the ingress dispatch matches destinations
// in this host's blocks, which the host's own addresses are not, so the
// input chain does not even reach it). With no egress policy applied to the endpoint the
// packet is accepted (here: other tables still see it), the Kubernetes
// default.
//
// Only packets arriving on an endpoint interface are looked at; the rest
// return at once (the base chain's policy, accept), so the uplink's,
// loopback's and the host's own traffic are untouched. In order:
//
//  1. neighbour discovery and multicast listener reports (IPv6) are
//     accepted: they keep the endpoint's link working whatever its
//     policies (a solicitation of the gateway fe80::1 carries the
//     endpoint's own address as its source when it has one);
//  2. anti-spoofing: a packet whose source does not route back through
//     the interface it arrived on is dropped, whatever its source (a
//     pool's or not: one outside every pool would escape the egress
//     dispatch, which goes by source), with the forward chain's exemption
//     of packets carrying the steering mark;
//  3. conntrack: established and related accepted (replies to the host's
//     connections to the endpoint, kubelet's probes among them), invalid
//     dropped;
//  4. a new connection from an IPv6 link-local source: an echo request
//     (a ping of the gateway fe80::1) is accepted, anything else dropped:
//     no policy can name a link-local address, and an endpoint under an
//     egress deny must not reach the host's services through fe80::1;
//  5. the policies-egress chain (ChainPoliciesEgress): the egress
//     stage's dispatch by source decides (a deny drops); what returns is
//     accepted. Not the policies chain: the ingress stage could not match
//     (the host's own addresses are in none of its blocks), and the
//     kernel would walk its chains once more at every commit.
func endpointInput(exempt string) Chain {
	spoofed := "fib saddr . iif oif missing counter drop"
	if exempt != "" {
		spoofed = strings.TrimSpace(exempt) + " " + spoofed
	}
	return Chain{Name: ChainInput, Hook: "input", Comment: "from this host's endpoints to the host itself: egress policies", Rules: []Rule{
		{Expr: "iifname != " + endpointLinks() + " return", Comment: "not from an endpoint: none of Romana's business"},
		{Expr: "meta nfproto ipv6 icmpv6 type " + ndpTypes + " accept", Comment: "neighbour discovery and multicast listener reports"},
		{Expr: spoofed, Comment: "spoofed source"},
		{Expr: "ct state established,related accept"},
		{Expr: "ct state invalid drop"},
		{Expr: "ip6 saddr fe80::/10 icmpv6 type echo-request accept", Comment: "ping of the gateway from a link-local source"},
		{Expr: "ip6 saddr fe80::/10 counter drop", Comment: "link-local source: no policy can name it"},
		{Expr: JumpPoliciesEgress},
	}}
}

// underlayRules check where packets with a pool source come from, beyond
// the reverse-path rule (which only proves that a packet arrived on the
// interface its source routes back through: the uplink, for every remote
// block, whoever on the underlay sent it).
//
// In every mode, this host's own blocks come only from endpoint links
// (named as api.EndpointInterfacePrefixes): an address of the block that
// no endpoint holds, arriving from the uplink, passes the reverse-path
// rule through the default route, and is dropped here.
//
// In flat mode with a known underlay, a packet from another host's block
// must come from that host: its source and its frame's source MAC must be
// one of the pairs (block, host's link-layer address) of the underlay
// set. A pool source that no host's block holds, or whose host's address
// is not resolved yet, is dropped. In fabric mode every remote block
// arrives from a router, so the host cannot tell which host sent it: that
// is the fabric's to check (docs/agent.md).
//
// Packets carrying the steering mark are exempt, as from the reverse-path
// rule: a chain's packets come back from a service function, local or on
// another host.
func underlayRules(in *inputs, exempt string) []Rule {
	var out []Rule
	for _, n := range in.networks {
		if !n.mine.IsValid() {
			continue
		}
		proto, _ := family(n)
		out = append(out, Rule{
			Expr:    fmt.Sprintf("%s saddr %s%s iifname != %s counter drop", proto, n.mine, exempt, endpointLinks()),
			Comment: "network " + n.Name + ": this host's block from a link that is no endpoint's",
		})
	}
	if in.sources == nil {
		return out
	}
	for _, n := range in.networks {
		proto, _ := family(n)
		set := UnderlaySet4
		if !n.Plan.Is4() {
			set = UnderlaySet6
		}
		notMine := ""
		if n.mine.IsValid() {
			notMine = fmt.Sprintf(" %s saddr != %s", proto, n.mine)
		}
		out = append(out, Rule{
			Expr:    fmt.Sprintf("%s saddr %s%s%s %s saddr . ether saddr != @%s counter drop", proto, n.Plan.Prefix(), notMine, exempt, proto, set),
			Comment: "network " + n.Name + ": source not from its block's host",
		})
	}
	return out
}

// tenantChains returns a tenant's chain and, in segment mode, its
// segments' chains, and the problems found (segments that do not fit a
// network). It reads the tenant, its segments and in's networks only.
func tenantChains(in *inputs, t api.Tenant) (_ []Chain, problems []string) {
	mode := t.Isolation
	if mode == "" {
		mode = api.IsolationTenant
	}
	c := Chain{Name: TenantChain(t.ID), Comment: fmt.Sprintf("tenant %s, isolation %s", t.Name, mode)}
	switch mode {
	case api.IsolationNone:
		c.Rules = append(c.Rules, Rule{Expr: "counter accept", Comment: "tenant " + t.Name + ": open"})
		return []Chain{c}, nil
	case api.IsolationTenant:
		for _, n := range in.networks {
			if !n.Admits(t.Name) {
				continue
			}
			proto, _ := family(n)
			m, err := n.Plan.TenantMatch(t.ID)
			if err != nil {
				continue // reported by isolation
			}
			c.Rules = append(c.Rules, Rule{
				Expr:    fmt.Sprintf("%s saddr & %s == %s counter accept", proto, m.Mask, m.Value),
				Comment: "from tenant " + t.Name + " in network " + n.Name,
			})
		}
		c.Rules = append(c.Rules, Rule{Expr: "counter drop", Comment: "tenant " + t.Name + ": isolation"})
		return []Chain{c}, nil
	}
	// Segment mode: dispatch on the destination's segment, then accept
	// sources of that same segment.
	var segChains []Chain
	for _, s := range in.m.Segments(t.Name) {
		var dispatch []Rule
		for _, n := range in.networks {
			if !n.mine.IsValid() || !n.Admits(t.Name) {
				continue
			}
			proto, _ := family(n)
			m, err := n.Plan.SegmentMatch(t.ID, s.ID)
			if err != nil {
				problems = append(problems, fmt.Sprintf("segment %q of tenant %q: id %d does not fit network %q: %v", s.Name, t.Name, s.ID, n.Name, err))
				continue
			}
			dispatch = append(dispatch, Rule{Expr: fmt.Sprintf("%s daddr & %s == %s goto %s", proto, m.Mask, m.Value, SegmentChain(t.ID, s.ID))})
		}
		if len(dispatch) == 0 {
			continue
		}
		c.Rules = append(c.Rules, dispatch...)
		sc := Chain{Name: SegmentChain(t.ID, s.ID), Comment: fmt.Sprintf("tenant %s segment %s", t.Name, s.Name)}
		for _, n := range in.networks {
			if !n.Admits(t.Name) {
				continue
			}
			proto, _ := family(n)
			m, err := n.Plan.SegmentMatch(t.ID, s.ID)
			if err != nil {
				continue
			}
			sc.Rules = append(sc.Rules, Rule{
				Expr:    fmt.Sprintf("%s saddr & %s == %s counter accept", proto, m.Mask, m.Value),
				Comment: "from segment " + s.Name + " in network " + n.Name,
			})
		}
		sc.Rules = append(sc.Rules, Rule{Expr: "counter drop", Comment: "tenant " + t.Name + " segment " + s.Name + ": isolation"})
		segChains = append(segChains, sc)
	}
	c.Rules = append(c.Rules, Rule{Expr: "counter drop", Comment: "tenant " + t.Name + ": isolation (unknown segment)"})
	return append([]Chain{c}, segChains...), problems
}

// Policies returns the names of the policies with rules in rs, in order
// of first appearance.
func (rs Ruleset) Policies() []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Policy != "" && !seen[r.Policy] {
				seen[r.Policy] = true
				out = append(out, r.Policy)
			}
		}
	}
	return out
}

// WithoutPolicies returns a copy of rs without the rules of the policies
// drop reports true for: they compile to nothing, as a policy naming an
// absent tenant does. Chains and every other rule stay; rs is not modified.
func (rs Ruleset) WithoutPolicies(drop func(policy string) bool) Ruleset {
	out := Ruleset{Sets: rs.Sets, Maps: rs.Maps, Chains: make([]Chain, len(rs.Chains)), Flowtables: rs.Flowtables}
	for i, c := range rs.Chains {
		out.Chains[i] = c
		if !slices.ContainsFunc(c.Rules, func(r Rule) bool { return r.Policy != "" && drop(r.Policy) }) {
			continue
		}
		out.Chains[i].Rules = nil
		for _, r := range c.Rules {
			if r.Policy == "" || !drop(r.Policy) {
				out.Chains[i].Rules = append(out.Chains[i].Rules, r)
			}
		}
	}
	return out
}

// Package netpol compiles Kubernetes network state (namespaces, pods,
// NetworkPolicies and ClusterNetworkPolicies) into Romana policies and
// address sets. It is pure: plain Kubernetes API objects in, sorted Romana
// objects out, no I/O, no clock. The controller feeds it what its informers
// hold and writes the difference to romanad.
//
// What it does not understand it reports in Output.Problems and compiles
// fail-closed: a deny or pass rule it cannot read denies everything it could
// have matched, an allow rule it cannot read (or a peer or port of one)
// matches nothing. It never widens a policy. See docs/kubernetes.md.
package netpol

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/romana/romana/api"
)

// Defaults of Config.
const (
	DefaultSegmentLabel = "romana.io/segment"
	DefaultPrefix       = "k8s."
	// DefaultSegment is a pod's segment when it has no segment label.
	DefaultSegment = "default"
)

// TenantOf is the tenant of a namespace: the value of cfg.TenantLabel
// when set and present, else the namespace's name; an error when that is
// not a valid Romana name. It is the one rule romana-kube (package kube)
// and the compiler share.
func TenantOf(cfg Config, n corev1.Namespace) (string, error) {
	t := n.Name
	if cfg.TenantLabel != "" {
		if v, ok := n.Labels[cfg.TenantLabel]; ok {
			t = v
		}
	}
	if err := api.ValidateName("tenant", t); err != nil {
		return "", err
	}
	return t, nil
}

// SegmentOf is the segment of a pod: the value of its segment label
// (cfg.SegmentLabel, default DefaultSegmentLabel), DefaultSegment without
// it; an error when the value is not a valid Romana name.
func SegmentOf(cfg Config, p corev1.Pod) (string, error) {
	s, ok := p.Labels[cmp.Or(cfg.SegmentLabel, DefaultSegmentLabel)]
	if !ok {
		return DefaultSegment, nil
	}
	if err := api.ValidateName("segment", s); err != nil {
		return "", err
	}
	return s, nil
}

// Priorities of the policies compiled from NetworkPolicies, in the default
// tier: every NetworkPolicy allow comes before the isolation deny of the
// pods they select. Romana's own policies (default priority 1000) come
// before both.
const (
	PriorityNetworkPolicy = 50000
	PriorityIsolation     = 60000
)

// Config says how namespaces and pods map to Romana tenants and segments,
// and how generated objects are named.
type Config struct {
	// TenantLabel, when set, is the namespace label whose value names the
	// namespace's tenant (several namespaces may share one); a namespace
	// without it is its own tenant. Empty: every namespace is the tenant of
	// its name.
	TenantLabel string
	// SegmentLabel is the pod label naming the pod's segment
	// (DefaultSegmentLabel when empty); a pod without it is in segment
	// DefaultSegment.
	SegmentLabel string
	// Prefix starts the name of every generated policy and set
	// (DefaultPrefix when empty). It must be a valid start of a Romana name.
	Prefix string
	// PodCIDRs, when given, are the address pools of the Kubernetes
	// networks, which hold pod addresses only: a peer "all pods of all
	// namespaces" then compiles to them (a few prefixes) instead of one
	// masked match per tenant.
	PodCIDRs []netip.Prefix
}

func (c Config) withDefaults() Config {
	if c.SegmentLabel == "" {
		c.SegmentLabel = DefaultSegmentLabel
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	return c
}

// Input is the Kubernetes state to compile. Order does not matter.
type Input struct {
	Config     Config
	Namespaces []corev1.Namespace
	// Pods are endpoints when they are not hostNetwork and have not
	// terminated (Succeeded or Failed): with their IPs (status.podIPs,
	// else status.podIP) in the address sets that select them, and by
	// name (api.AddressSet.Pods) also before they have one, unless they
	// are being deleted.
	Pods []corev1.Pod
	// Nodes give the addresses of ClusterNetworkPolicy "nodes" peers.
	Nodes []corev1.Node
	// Addresses, when given, are Romana's allocations: where each pod
	// address really is (tenant, segment). A masked match is used only
	// where the pods' addresses agree with it (a pod relabelled into
	// another segment keeps its address until it is recreated); without
	// them addresses are assumed to follow the namespace and labels.
	Addresses              []api.Address
	NetworkPolicies        []networkingv1.NetworkPolicy
	ClusterNetworkPolicies []v1alpha2.ClusterNetworkPolicy
}

// Output is what Compile makes: policies and the address sets they name,
// each sorted by name, and the problems met, sorted.
type Output struct {
	Policies []api.Policy
	Sets     []api.AddressSet
	Problems []string
}

// String renders the output one object per line, for golden tests and
// diffs.
func (o Output) String() string {
	var b strings.Builder
	for _, p := range o.Policies {
		fmt.Fprintf(&b, "policy %s tier=%q prio=%d dir=%v to=%s\n", p.Name, p.Tier, p.Priority, p.Direction, selectorsString(p.AppliedTo))
		for i, r := range p.Rules {
			fmt.Fprintf(&b, "  rule %d %s %s", i, r.Action, r.Protocol)
			if len(r.Ports) > 0 {
				fmt.Fprintf(&b, " ports=%v", r.Ports)
			}
			if len(r.PortRanges) > 0 {
				fmt.Fprintf(&b, " ranges=%v", r.PortRanges)
			}
			fmt.Fprintf(&b, " peers=%s\n", peersString(r.Peers))
		}
	}
	for _, s := range o.Sets {
		pods := ""
		if len(s.Pods) > 0 {
			pods = fmt.Sprintf(" pods=%v", s.Pods)
		}
		fmt.Fprintf(&b, "set %s %v%s (%s)\n", s.Name, s.Addresses, pods, s.Description)
	}
	for _, p := range o.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	return b.String()
}

func selectorsString(ss []api.Selector) string {
	var parts []string
	for _, s := range ss {
		parts = append(parts, endpointString(s.All, "", nil, s.Tenant, s.Segment, s.Host, s.Set))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func peersString(ps []api.Peer) string {
	if len(ps) == 0 {
		return "[any]"
	}
	var parts []string
	for _, p := range ps {
		parts = append(parts, endpointString(p.Any, p.CIDR, p.Except, p.Tenant, p.Segment, p.Host, p.Set))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func endpointString(all bool, cidr string, except []string, tenant, segment, host, set string) string {
	var f []string
	if all {
		f = append(f, "all")
	}
	if cidr != "" {
		f = append(f, "cidr="+cidr)
	}
	if len(except) > 0 {
		f = append(f, "except="+strings.Join(except, ","))
	}
	if tenant != "" {
		f = append(f, "tenant="+tenant)
	}
	if segment != "" {
		f = append(f, "segment="+segment)
	}
	if host != "" {
		f = append(f, "host="+host)
	}
	if set != "" {
		f = append(f, "set="+set)
	}
	return "{" + strings.Join(f, ",") + "}"
}

// Compile turns the Kubernetes state into Romana policies and address
// sets. It never fails: what it cannot compile faithfully is reported in
// Output.Problems and compiled fail-closed. The same state in any order
// gives an identical Output; names derive from the Kubernetes objects and
// from hashes of selectors, never from list positions, so a small change
// of state is a small change of Output.
func Compile(in Input) Output {
	w := newWorld(in)
	var pols []api.Policy
	pols = append(pols, w.networkPolicies(in.NetworkPolicies)...)
	for _, c := range canonical(in.ClusterNetworkPolicies, func(c *v1alpha2.ClusterNetworkPolicy) string { return c.Name }) {
		pols = append(pols, w.clusterNetworkPolicy(*c)...)
	}
	// Stable: of two policies with one name, the first of the canonical
	// order is kept.
	slices.SortStableFunc(pols, func(a, b api.Policy) int { return cmp.Compare(a.Name, b.Name) })
	pols = slices.CompactFunc(pols, func(a, b api.Policy) bool {
		if a.Name == b.Name {
			w.problem("policy name %s generated twice: kept the first", a.Name)
			return true
		}
		return false
	})
	used := map[string]bool{} // sets a policy names (others were computed on the way, unused)
	for _, p := range pols {
		for _, s := range p.AppliedTo {
			used[s.Set] = true
		}
		for _, r := range p.Rules {
			for _, x := range r.Peers {
				used[x.Set] = true
			}
		}
	}
	sets := make([]api.AddressSet, 0, len(w.sets))
	for _, s := range w.sets {
		if used[s.Name] {
			sets = append(sets, s)
		}
	}
	slices.SortFunc(sets, func(a, b api.AddressSet) int { return cmp.Compare(a.Name, b.Name) })
	probs := slices.Clone(w.problems)
	slices.Sort(probs)
	probs = slices.Compact(probs)
	return Output{Policies: pols, Sets: sets, Problems: probs}
}

// hash returns 16 hex digits of the SHA-256 of s.
func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

// name builds "<prefix><kind>.<rest>", or "<prefix><kind>.h<hash of rest>"
// when that is not a valid Romana name (too long, or characters Romana
// names do not take).
func (w *world) name(kind, rest string) string {
	n := w.cfg.Prefix + kind + "." + rest
	if api.ValidateName("policy", n) == nil {
		return n
	}
	return w.cfg.Prefix + kind + ".h" + hash(rest)
}

// Package kube is Romana's Kubernetes controller (the romana-kube binary):
// it follows nodes, namespaces, pods, NetworkPolicies and
// ClusterNetworkPolicies through client-go informers and keeps romanad's
// hosts, tenants, segments, pod records, policies and address sets equal
// to what they say.
//
// The thinking is pure (Desire: Kubernetes objects in, the Romana objects
// they call for out); the controller only watches, computes and writes the
// difference, owning only the objects it made: hosts and tenants labelled
// api.LabelSource (a tenant with its segments), policies and address sets
// named with Config.Prefix, and pod records.
package kube

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/romana/romana/api"
	"github.com/romana/romana/netpol"
)

// Defaults of Config (the compiler's, package netpol, where they are
// shared).
const (
	DefaultSegmentLabel   = netpol.DefaultSegmentLabel
	DefaultIsolationLabel = "romana.io/isolation"
	DefaultPrefix         = netpol.DefaultPrefix
	DefaultSegment        = netpol.DefaultSegment
)

// Config says how Kubernetes objects map to Romana's.
type Config struct {
	// TenantLabel is a namespace label naming the namespace's tenant
	// (several namespaces may share one); a namespace without it, or ""
	// (the default), is its own tenant, by name.
	TenantLabel string
	// SegmentLabel is the pod label naming the pod's segment (default
	// DefaultSegmentLabel); pods without it are in DefaultSegment.
	SegmentLabel string
	// IsolationLabel is the namespace label by which an operator opts a
	// namespace's tenant into isolation: "tenant" (only the tenant's own
	// pods may connect to it) or "segment" (only the same segment's).
	// Without it a namespace is open, as Kubernetes expects.
	IsolationLabel string
	// Topology maps a level of the address plan (e.g. "rack") to the node
	// label whose value places the node in it (e.g.
	// "topology.kubernetes.io/zone").
	Topology map[string]string
	// Prefix starts the names of the policies and address sets the
	// controller owns (default DefaultPrefix).
	Prefix string
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	c.SegmentLabel = cmp.Or(c.SegmentLabel, DefaultSegmentLabel)
	c.IsolationLabel = cmp.Or(c.IsolationLabel, DefaultIsolationLabel)
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	return c
}

// State is the Kubernetes objects the controller follows.
type State struct {
	Nodes                  []corev1.Node
	Namespaces             []corev1.Namespace
	Pods                   []corev1.Pod
	NetworkPolicies        []networkingv1.NetworkPolicy
	ClusterNetworkPolicies []v1alpha2.ClusterNetworkPolicy
}

// PolicySet is what a policy compiler (package netpol) makes of a State.
type PolicySet struct {
	Policies []api.Policy
	Sets     []api.AddressSet
	Problems []string
}

// Desired is the Romana objects a State calls for, each list sorted by
// name.
type Desired struct {
	Hosts    []api.Host
	Tenants  []api.Tenant
	Segments []api.Segment
	Pods     []api.Pod
	Policies []api.Policy
	Sets     []api.AddressSet
	Problems []string
}

// Desire computes the Romana objects st calls for. policies compiles
// NetworkPolicies and ClusterNetworkPolicies (netpol.Compile in
// romana-kube); the isolation policies of opted-in namespaces are added
// here.
func Desire(cfg Config, st State, policies func(State) PolicySet) Desired {
	cfg = cfg.WithDefaults()
	var d Desired
	problem := func(format string, a ...any) { d.Problems = append(d.Problems, fmt.Sprintf(format, a...)) }
	for _, n := range st.Nodes {
		h, err := hostOf(cfg, n)
		if err != nil {
			problem("node %s: %v", n.Name, err)
			continue
		}
		d.Hosts = append(d.Hosts, h)
	}
	tenants := map[string]string{} // namespace → tenant
	isolation := map[string]string{}
	for _, ns := range st.Namespaces {
		t, err := tenantOf(cfg, ns)
		if err != nil {
			problem("namespace %s: %v", ns.Name, err)
			continue
		}
		tenants[ns.Name] = t
		if iso := ns.Labels[cfg.IsolationLabel]; iso != "" {
			switch iso {
			case api.IsolationTenant, api.IsolationSegment, api.IsolationNone:
				if old, ok := isolation[t]; ok && old != iso {
					problem("tenant %s: namespaces ask for isolation %s and %s; using %s", t, old, iso, stricter(old, iso))
					iso = stricter(old, iso)
				}
				isolation[t] = iso
			default:
				problem("namespace %s: label %s=%q: want tenant, segment or none; the namespace stays open", ns.Name, cfg.IsolationLabel, iso)
			}
		}
	}
	for _, t := range slices.Compact(slices.Sorted(maps.Values(tenants))) {
		// Tenants are always open: isolation a namespace opts into is a
		// policy (isolationPolicy), so a label change never needs the
		// tenant (and its addresses) to be recreated.
		// Labelled as the controller's: it removes them (and only them)
		// once no namespace maps to them (Reconciler.Sync).
		d.Tenants = append(d.Tenants, api.Tenant{Name: t, Isolation: api.IsolationNone,
			Labels: map[string]string{api.LabelSource: api.SourceKubernetes}})
	}
	segs := map[[2]string]bool{}
	for t := range maps.Values(tenants) {
		segs[[2]string{t, DefaultSegment}] = true
	}
	for _, p := range st.Pods {
		if p.Spec.HostNetwork {
			continue
		}
		t, ok := tenants[p.Namespace]
		if !ok {
			problem("pod %s/%s: namespace %s unknown or unusable", p.Namespace, p.Name, p.Namespace)
			continue
		}
		seg, err := segmentOf(cfg, p)
		if err != nil {
			problem("pod %s/%s: %v; using segment %s", p.Namespace, p.Name, err, DefaultSegment)
			seg = DefaultSegment
		}
		segs[[2]string{t, seg}] = true
		d.Pods = append(d.Pods, api.Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), Tenant: t, Segment: seg})
	}
	for k := range segs {
		d.Segments = append(d.Segments, api.Segment{Tenant: k[0], Name: k[1]})
	}
	if policies != nil {
		ps := policies(st)
		d.Policies = append(d.Policies, ps.Policies...)
		for _, set := range ps.Sets {
			d.Sets = append(d.Sets, fitSet(set, problem))
		}
		d.Problems = append(d.Problems, ps.Problems...)
	}
	slices.SortFunc(d.Segments, func(a, b api.Segment) int {
		return cmp.Or(strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Name, b.Name))
	})
	for _, t := range slices.Sorted(maps.Keys(isolation)) {
		var segments []string
		for _, s := range d.Segments {
			if s.Tenant == t {
				segments = append(segments, s.Name)
			}
		}
		d.Policies = append(d.Policies, isolationPolicies(cfg, t, isolation[t], segments)...)
	}
	slices.SortFunc(d.Hosts, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.Pods, func(a, b api.Pod) int { return strings.Compare(a.Key(), b.Key()) })
	slices.SortFunc(d.Policies, func(a, b api.Policy) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.Sets, func(a, b api.AddressSet) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(d.Problems)
	return d
}

// IsolationPriority is the baseline-tier priority of the isolation
// policies of opted-in namespaces: after every ClusterNetworkPolicy of
// the baseline tier that could name the tenant, so an operator's baseline
// rules come first.
const IsolationPriority = 65000

// isolationPolicies are the policies that give tenant t the isolation
// mode iso, in the baseline tier (NetworkPolicies and admin policies open
// or close before them): for "tenant", one policy on the tenant allowing
// from the tenant and denying the rest; for "segment", one per segment
// allowing from that segment. They are the same few masked rules as
// Romana's own tenant isolation, whatever the number of pods.
func isolationPolicies(cfg Config, t, iso string, segments []string) []api.Policy {
	mk := func(name string, sel api.Selector, peer api.Peer, what string) api.Policy {
		return api.Policy{
			Name:        name,
			Description: fmt.Sprintf("namespace label %s=%s: only %s may connect", cfg.IsolationLabel, iso, what),
			Tier:        api.TierBaseline,
			Priority:    IsolationPriority,
			Direction:   []string{api.DirectionIngress},
			AppliedTo:   []api.Selector{sel},
			Rules:       []api.Rule{{Action: api.ActionAllow, Peers: []api.Peer{peer}}, {Action: api.ActionDeny}},
		}
	}
	switch iso {
	case api.IsolationTenant:
		return []api.Policy{mk(cfg.Prefix+"isolation."+t, api.Selector{Tenant: t}, api.Peer{Tenant: t}, "tenant "+t)}
	case api.IsolationSegment:
		var out []api.Policy
		for _, s := range segments {
			out = append(out, mk(cfg.Prefix+"isolation."+t+"."+s, api.Selector{Tenant: t, Segment: s}, api.Peer{Tenant: t, Segment: s}, "segment "+t+"/"+s))
		}
		return out
	}
	return nil
}

func stricter(a, b string) string {
	rank := map[string]int{api.IsolationNone: 0, api.IsolationTenant: 1, api.IsolationSegment: 2}
	if rank[a] >= rank[b] {
		return a
	}
	return b
}

// hostOf is a node's host: its InternalIP (IPv4, with an IPv6 one as
// IP6; IPv6 alone when it has no IPv4), its topology labels, and
// api.LabelSource.
func hostOf(cfg Config, n corev1.Node) (api.Host, error) {
	if err := api.ValidateName("host", n.Name); err != nil {
		return api.Host{}, err
	}
	var v4, v6 netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	h := api.Host{Name: n.Name, Labels: map[string]string{api.LabelSource: api.SourceKubernetes}}
	switch {
	case v4.IsValid():
		h.IP, h.IP6 = v4, v6
	case v6.IsValid():
		h.IP = v6
	default:
		return api.Host{}, fmt.Errorf("no InternalIP in its status yet")
	}
	for _, level := range slices.Sorted(maps.Keys(cfg.Topology)) {
		label := cfg.Topology[level]
		v, ok := n.Labels[label]
		if !ok {
			return api.Host{}, fmt.Errorf("no label %s (the plan's %s level)", label, level)
		}
		h.Labels[level] = v
	}
	return h, nil
}

// tenantOf is a namespace's tenant (netpol.TenantOf: the compiler and the
// controller must agree).
func tenantOf(cfg Config, ns corev1.Namespace) (string, error) {
	return netpol.TenantOf(netpol.Config{TenantLabel: cfg.TenantLabel}, ns)
}

// segmentOf is a pod's segment (netpol.SegmentOf).
func segmentOf(cfg Config, p corev1.Pod) (string, error) {
	s, err := netpol.SegmentOf(netpol.Config{SegmentLabel: cfg.SegmentLabel}, p)
	if err != nil {
		return "", fmt.Errorf("label %s: %w", cfg.SegmentLabel, err)
	}
	return s, nil
}

// fitSet returns s, without its pods when with them it would pass romanad's
// limits (api.MaxAddressSetSize pods, api.MaxAddressSetBytes stored) and
// without them it would not: such a set's members are its addresses only,
// so a new pod of it waits for its address to reach the set (reported as
// a problem).
func fitSet(s api.AddressSet, problem func(string, ...any)) api.AddressSet {
	if len(s.Pods) == 0 {
		return s
	}
	if b, err := json.Marshal(s); err == nil && len(s.Pods) <= api.MaxAddressSetSize && len(b) <= api.MaxAddressSetBytes {
		return s
	}
	problem("address set %s: %d pods do not fit one set; it lists their addresses only, so its new pods are enforced once romana-kube wrote their addresses", s.Name, len(s.Pods))
	s.Pods = nil
	return s
}

package netpol

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/romana/romana/api"
)

// ns is a namespace as the compiler sees it.
type ns struct {
	name   string
	labels labels.Set
	// tenant is the namespace's Romana tenant; "" when its name is not a
	// valid Romana name (the namespace's pods are then reached by sets).
	tenant string
}

// pod is an endpoint: a pod with addresses.
type pod struct {
	ns, name string
	labels   labels.Set
	ips      []netip.Addr
	// segment is the segment its labels name ("" when not a valid name).
	segment string
	ports   []corev1.ContainerPort
}

func (p *pod) key() string { return p.ns + "/" + p.name }

// world indexes the input once and collects sets and problems while
// policies compile.
type world struct {
	cfg      Config
	nss      []*ns // sorted by name
	nsByName map[string]*ns
	pods     []*pod // sorted by namespace/name
	podsByNS map[string][]*pod
	// tenantNS lists the namespaces of each tenant, sorted.
	tenantNS map[string][]string
	// placed is where Romana allocated each address (Input.Addresses).
	placed   map[netip.Addr]api.Address
	nodes    []corev1.Node
	sets     map[string]api.AddressSet
	problems []string
}

func (w *world) problem(format string, args ...any) {
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
}

// canonical orders objects by key and, for one key given twice, by their
// JSON form: which of two objects with one key is kept ("given twice:
// kept the first") must not depend on the order of the input.
func canonical[T any](in []T, key func(*T) string) []*T {
	type item struct {
		k, form string
		v       *T
	}
	items := make([]item, len(in))
	for i := range in {
		items[i] = item{k: key(&in[i]), v: &in[i]}
	}
	slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(a.k, b.k) })
	for i := range items {
		if (i > 0 && items[i-1].k == items[i].k) || (i+1 < len(items) && items[i+1].k == items[i].k) {
			b, _ := json.Marshal(items[i].v)
			items[i].form = string(b)
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return cmp.Or(cmp.Compare(a.k, b.k), cmp.Compare(a.form, b.form)) })
	out := make([]*T, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out
}

func newWorld(in Input) *world {
	w := &world{cfg: in.Config.withDefaults(), nsByName: map[string]*ns{}, podsByNS: map[string][]*pod{},
		tenantNS: map[string][]string{}, placed: map[netip.Addr]api.Address{}, sets: map[string]api.AddressSet{}}
	for _, np := range canonical(in.Namespaces, func(n *corev1.Namespace) string { return n.Name }) {
		n := *np
		if _, dup := w.nsByName[n.Name]; dup {
			w.problem("namespace %s given twice: kept the first", n.Name)
			continue
		}
		x := &ns{name: n.Name, labels: labels.Set(n.Labels)}
		if t, err := TenantOf(w.cfg, n); err != nil {
			w.problem("namespace %s: tenant %q is not a Romana name: its pods are matched by address sets only", n.Name, n.Labels[w.cfg.TenantLabel])
		} else {
			x.tenant = t
			w.tenantNS[x.tenant] = append(w.tenantNS[x.tenant], x.name)
		}
		w.nsByName[n.Name] = x
		w.nss = append(w.nss, x)
	}
	slices.SortFunc(w.nss, func(a, b *ns) int { return cmp.Compare(a.name, b.name) })
	for t := range w.tenantNS {
		slices.Sort(w.tenantNS[t])
	}
	for _, a := range in.Addresses {
		w.placed[a.IP.Unmap()] = a
	}
	seen := map[string]bool{}
	for _, p := range canonical(in.Pods, func(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }) {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		x := &pod{ns: p.Namespace, name: p.Name, labels: labels.Set(p.Labels)}
		if seen[x.key()] {
			w.problem("pod %s given twice: kept the first", x.key())
			continue
		}
		seen[x.key()] = true
		ips := p.Status.PodIPs
		if len(ips) == 0 && p.Status.PodIP != "" {
			ips = []corev1.PodIP{{IP: p.Status.PodIP}}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				w.problem("pod %s: address %q: %v", x.key(), ip.IP, err)
				continue
			}
			x.ips = append(x.ips, a.Unmap())
		}
		if len(x.ips) == 0 && p.DeletionTimestamp != nil {
			continue
		}
		// A pod without an address yet is an endpoint too: the sets
		// selecting it list it by name (api.AddressSet.Pods), and every
		// agent adds its address the moment romanad allocates it.
		if _, ok := w.nsByName[x.ns]; !ok {
			w.problem("pod %s: namespace %s is unknown: the pod is not an endpoint of any policy", x.key(), x.ns)
			continue
		}
		if s, err := SegmentOf(w.cfg, *p); err != nil {
			w.problem("pod %s: segment %q is not a Romana name", x.key(), p.Labels[w.cfg.SegmentLabel])
		} else {
			x.segment = s
		}
		for _, c := range p.Spec.Containers {
			x.ports = append(x.ports, c.Ports...)
		}
		w.pods = append(w.pods, x)
		w.podsByNS[x.ns] = append(w.podsByNS[x.ns], x)
	}
	slices.SortFunc(w.pods, func(a, b *pod) int { return cmp.Compare(a.key(), b.key()) })
	for n := range w.podsByNS {
		slices.SortFunc(w.podsByNS[n], func(a, b *pod) int { return cmp.Compare(a.key(), b.key()) })
	}
	w.nodes = slices.Clone(in.Nodes)
	slices.SortFunc(w.nodes, func(a, b corev1.Node) int { return cmp.Compare(a.Name, b.Name) })
	return w
}

// sel is a parsed label selector.
type sel struct {
	s     labels.Selector
	empty bool // selects everything
	// segment is set when the selector is exactly {SegmentLabel: segment}
	// (matchLabels, or matchExpressions In with one value).
	segment string
	text    string // canonical form, for hashing
}

// parseSel parses a label selector; nil means "everything" (as a missing
// namespaceSelector does in the contexts the caller uses it).
func (w *world) parseSel(ls *metav1.LabelSelector) (sel, error) {
	if ls == nil {
		return sel{s: labels.Everything(), empty: true}, nil
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return sel{}, err
	}
	out := sel{s: s, empty: s.Empty(), text: s.String()}
	if reqs, _ := s.Requirements(); len(reqs) == 1 {
		r := reqs[0]
		if r.Key() == w.cfg.SegmentLabel && (r.Operator() == "=" || r.Operator() == "==" || r.Operator() == "in") && r.Values().Len() == 1 {
			v := r.Values().List()[0]
			if v != DefaultSegment && api.ValidateName("segment", v) == nil {
				out.segment = v
			}
		}
	}
	return out, nil
}

// group is a selection of pods: the pods matching pods in the namespaces
// matching nss (or in namespace only, when set).
type group struct {
	scoped bool   // the pods of namespace only; nss unused
	only   string // the namespace, when scoped
	nss    sel
	pods   sel
}

func (g group) key() string {
	if g.scoped {
		return "in:" + g.only + "|pods:" + g.pods.text
	}
	return "ns:" + g.nss.text + "|pods:" + g.pods.text
}

func (w *world) namespaces(g group) []*ns {
	if g.scoped {
		if x, ok := w.nsByName[g.only]; ok {
			return []*ns{x}
		}
		return nil
	}
	var out []*ns
	for _, x := range w.nss {
		if g.nss.s.Matches(x.labels) {
			out = append(out, x)
		}
	}
	return out
}

func (w *world) members(g group) []*pod {
	var out []*pod
	for _, x := range w.namespaces(g) {
		for _, p := range w.podsByNS[x.name] {
			if g.pods.s.Matches(p.labels) {
				out = append(out, p)
			}
		}
	}
	return out
}

// part is one piece of a compiled group: a masked tenant (and segment)
// match, prefixes, or an address set.
type part struct {
	tenant, segment string
	cidr            string
	set             string
}

// parts compiles a group to masked matches where they are exact and one
// address set for the rest. A tenant match is exact when the group takes
// every pod of every namespace of the tenant (segment: every pod with
// that segment label there) and no pod of those namespaces has an address
// placed elsewhere. allPods lets "every pod everywhere" become
// Config.PodCIDRs.
func (w *world) parts(g group, allPods bool) []part {
	if allPods && !g.scoped && g.nss.empty && g.pods.empty && len(w.cfg.PodCIDRs) > 0 {
		var out []part
		for _, c := range w.cfg.PodCIDRs {
			out = append(out, part{cidr: c.Masked().String()})
		}
		slices.SortFunc(out, func(a, b part) int { return cmp.Compare(a.cidr, b.cidr) })
		return slices.Compact(out)
	}
	nss := w.namespaces(g)
	in := map[string]bool{}
	for _, x := range nss {
		in[x.name] = true
	}
	masked := map[string]bool{} // namespaces covered by a masked part
	var out []part
	if g.pods.empty || g.pods.segment != "" {
		done := map[string]bool{}
		for _, x := range nss {
			t := x.tenant
			if t == "" || done[t] {
				continue
			}
			done[t] = true
			all := true
			for _, n := range w.tenantNS[t] {
				all = all && in[n]
			}
			if !all || !w.placedIn(t, g.pods.segment, w.tenantNS[t]) {
				continue
			}
			out = append(out, part{tenant: t, segment: g.pods.segment})
			for _, n := range w.tenantNS[t] {
				masked[n] = true
			}
		}
	}
	rest := len(out) == 0
	var addrs []netip.Addr
	var pods []string
	for _, x := range nss {
		if masked[x.name] {
			continue
		}
		rest = true
		for _, p := range w.podsByNS[x.name] {
			if g.pods.s.Matches(p.labels) {
				addrs = append(addrs, p.ips...)
				pods = append(pods, p.key())
			}
		}
	}
	if rest {
		out = append(out, part{set: w.set(g.key(), addrs, pods)})
	}
	return out
}

// placedIn reports whether the pods of namespaces have their addresses in
// tenant (and, when segment is set, in segment exactly when their segment
// label says so), as far as Input.Addresses tells.
func (w *world) placedIn(tenant, segment string, namespaces []string) bool {
	for _, n := range namespaces {
		for _, p := range w.podsByNS[n] {
			if segment != "" && p.segment == "" {
				return false
			}
			for _, ip := range p.ips {
				a, ok := w.placed[ip]
				if !ok {
					continue
				}
				if a.Tenant != tenant {
					return false
				}
				if segment != "" && (a.Segment == segment) != (p.segment == segment) {
					return false
				}
			}
		}
	}
	return true
}

// set records an address set named after key and returns its name: the
// given addresses (the pods' known ones, which agents older than
// api.AddressSet.Pods read) and pods ("namespace/name", every selected
// pod, addressed or not, which agents resolve to the pods' allocations).
// Sets of equal keys are one set.
func (w *world) set(key string, addrs []netip.Addr, pods []string) string {
	name := w.cfg.Prefix + "set." + hash(key)
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	if addrs == nil {
		addrs = []netip.Addr{}
	}
	slices.Sort(pods)
	pods = slices.Compact(pods)
	desc := key
	if len(desc) > 1024 {
		desc = desc[:1024]
	}
	w.sets[name] = api.AddressSet{Name: name, Description: desc, Addresses: addrs, Pods: pods}
	return name
}

func (p part) peer() api.Peer {
	return api.Peer{Tenant: p.tenant, Segment: p.segment, CIDR: p.cidr, Set: p.set}
}

// podsSet records the set of the given pods' addresses under key.
func (w *world) podsSet(key string, pods []*pod) string {
	var addrs []netip.Addr
	var keys []string
	for _, p := range pods {
		addrs = append(addrs, p.ips...)
		keys = append(keys, p.key())
	}
	return w.set(key, addrs, keys)
}

// selectors compiles a group as policy targets: masked matches where
// exact, else one set (scoped to the tenant of the group's one namespace,
// when it has one and the set's pods are placed there).
func (w *world) selectors(g group) []api.Selector {
	var out []api.Selector
	for _, p := range w.parts(g, false) {
		if p.set == "" {
			out = append(out, api.Selector{Tenant: p.tenant, Segment: p.segment})
			continue
		}
		s := api.Selector{Set: p.set}
		if x, ok := w.nsByName[g.only]; ok && x.tenant != "" && w.placedIn(x.tenant, "", []string{x.name}) {
			s.Tenant = x.tenant
		}
		out = append(out, s)
	}
	return out
}

// resolvePort finds the number of a named container port of p with
// protocol proto ("" for any protocol); it returns the port's protocol.
func resolvePort(p *pod, name string, proto corev1.Protocol) (corev1.Protocol, int32, bool) {
	for _, cp := range p.ports {
		pp := cp.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if cp.Name == name && (proto == "" || pp == proto) {
			return pp, cp.ContainerPort, true
		}
	}
	return "", 0, false
}

// romanaProto maps a Kubernetes protocol to Romana's.
func romanaProto(p corev1.Protocol) (string, bool) {
	switch strings.ToUpper(string(p)) {
	case "", "TCP":
		return api.ProtoTCP, true
	case "UDP":
		return api.ProtoUDP, true
	case "SCTP":
		return api.ProtoSCTP, true
	}
	return "", false
}

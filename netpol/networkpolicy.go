package netpol

import (
	"cmp"
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/romana/romana/api"
)

// networkPolicies compiles NetworkPolicies (networking.k8s.io/v1) into
// allow policies of the default tier at PriorityNetworkPolicy, and per
// direction one deny-all "isolation" policy at PriorityIsolation applied to
// every pod some NetworkPolicy of that direction selects. Pods no policy
// selects meet neither: they stay open (or go on to the baseline tier).
func (w *world) networkPolicies(nps []networkingv1.NetworkPolicy) []api.Policy {
	ordered := canonical(nps, func(np *networkingv1.NetworkPolicy) string { return np.Namespace + "/" + np.Name })
	var out []api.Policy
	iso := map[string][]api.Selector{}
	for i, npp := range ordered {
		np := *npp
		if i > 0 && np.Namespace == ordered[i-1].Namespace && np.Name == ordered[i-1].Name {
			w.problem("networkpolicy %s/%s given twice: kept the first", np.Namespace, np.Name)
			continue
		}
		pols, in, eg := w.networkPolicy(np)
		out = append(out, pols...)
		iso[api.DirectionIngress] = append(iso[api.DirectionIngress], in...)
		iso[api.DirectionEgress] = append(iso[api.DirectionEgress], eg...)
	}
	for _, dir := range []string{api.DirectionIngress, api.DirectionEgress} {
		sels := iso[dir]
		if len(sels) == 0 {
			continue
		}
		whole := map[string]bool{} // tenants isolated whole: their sets are within
		for _, s := range sels {
			if s.Tenant != "" && s.Segment == "" && s.Set == "" {
				whole[s.Tenant] = true
			}
		}
		sels = slices.DeleteFunc(sels, func(s api.Selector) bool { return s.Set != "" && whole[s.Tenant] })
		slices.SortFunc(sels, compareSelectors)
		sels = slices.Compact(sels)
		out = append(out, api.Policy{
			Name:        w.cfg.Prefix + "isolate." + dir,
			Description: "Kubernetes NetworkPolicy isolation (" + dir + "): pods selected by a NetworkPolicy accept only what one allows",
			Priority:    PriorityIsolation, Direction: []string{dir}, AppliedTo: sels,
			Rules: []api.Rule{{Action: api.ActionDeny, Protocol: api.ProtoAny}},
		})
	}
	return out
}

func compareSelectors(a, b api.Selector) int {
	bo := func(x bool) int {
		if x {
			return 1
		}
		return 0
	}
	return cmp.Or(cmp.Compare(bo(a.All), bo(b.All)), cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Segment, b.Segment),
		cmp.Compare(a.Host, b.Host), cmp.Compare(a.Set, b.Set))
}

// networkPolicy compiles one NetworkPolicy; it returns its allow policies
// and the targets it isolates for ingress and for egress.
func (w *world) networkPolicy(np networkingv1.NetworkPolicy) (pols []api.Policy, isoIn, isoEg []api.Selector) {
	id := np.Namespace + "/" + np.Name
	if _, ok := w.nsByName[np.Namespace]; !ok {
		w.problem("networkpolicy %s: namespace %q is unknown: it selects no pod", id, np.Namespace)
	}
	podSel, err := w.parseSel(&np.Spec.PodSelector)
	broken := err != nil
	if broken {
		// Fail closed: isolate the whole namespace, allow nothing.
		w.problem("networkpolicy %s: podSelector: %v: isolating every pod of namespace %s, allowing nothing", id, err, np.Namespace)
		podSel = everything()
	}
	targets := group{scoped: true, only: np.Namespace, pods: podSel}
	sels := w.selectors(targets)
	in, eg := false, false
	if len(np.Spec.PolicyTypes) == 0 {
		in, eg = true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			in = true
		case networkingv1.PolicyTypeEgress:
			eg = true
		default:
			w.problem("networkpolicy %s: policyType %q is unknown: ignored", id, t)
		}
	}
	if in {
		isoIn = sels
		if !broken {
			pols = append(pols, w.npDirection(np, api.DirectionIngress, targets, sels)...)
		}
	}
	if eg {
		isoEg = sels
		if !broken {
			pols = append(pols, w.npDirection(np, api.DirectionEgress, targets, sels)...)
		}
	}
	return pols, isoIn, isoEg
}

type npRule struct {
	anyPeer bool
	peers   []peerSpec
	ports   []portSpec
}

// npDirection compiles the rules of one direction. Ingress named ports are
// resolved on the target pods: when the targets resolve them differently,
// one policy per way of resolving them, applied to a set of those pods.
func (w *world) npDirection(np networkingv1.NetworkPolicy, dir string, targets group, sels []api.Selector) []api.Policy {
	id := np.Namespace + "/" + np.Name
	var krs []npRule
	if dir == api.DirectionIngress {
		for i, r := range np.Spec.Ingress {
			krs = append(krs, w.npRule(id, "ingress", i, np.Namespace, r.From, r.Ports))
		}
	} else {
		for i, r := range np.Spec.Egress {
			krs = append(krs, w.npRule(id, "egress", i, np.Namespace, r.To, r.Ports))
		}
	}
	kind := "npi"
	if dir == api.DirectionEgress {
		kind = "npe"
	}
	base := np.Namespace + "." + np.Name
	desc := "Kubernetes NetworkPolicy " + id + " (" + dir + ")"
	mk := func(kind string, to []api.Selector, res resolver) []api.Policy {
		var rules []api.Rule
		for _, kr := range krs {
			rules = append(rules, w.rules(api.ActionAllow, kr.anyPeer, kr.peers, kr.ports, res)...)
		}
		if len(rules) == 0 {
			return nil // allows nothing: the isolation policy decides
		}
		return []api.Policy{{Name: w.name(kind, base), Description: desc, Priority: PriorityNetworkPolicy,
			Direction: []string{dir}, AppliedTo: to, Rules: rules}}
	}
	if dir == api.DirectionEgress {
		return mk(kind, sels, nil)
	}
	var allPorts [][]portSpec
	for _, kr := range krs {
		allPorts = append(allPorts, kr.ports)
	}
	named := namedPorts(allPorts...)
	sigs, by := targetGroups(w.members(targets), named)
	if len(sigs) == 1 {
		var first *pod
		if ps := by[sigs[0]]; len(ps) > 0 {
			first = ps[0]
		}
		return mk(kind, sels, podResolver(first))
	}
	var out []api.Policy
	for _, sig := range sigs {
		ps := by[sig]
		s := api.Selector{Set: w.podsSet(targets.key()+"|sig:"+sig, ps)}
		if x, ok := w.nsByName[np.Namespace]; ok && x.tenant != "" && w.placedIn(x.tenant, "", []string{x.name}) {
			s.Tenant = x.tenant
		}
		out = append(out, mk(kind+"-g"+hash(sig)[:8], []api.Selector{s}, podResolver(ps[0]))...)
	}
	return out
}

// npRule parses one ingress or egress rule. Peers and ports it cannot
// read are reported and left out (an allow that matches less); if all of
// a rule's peers (or ports) are left out, the rule matches nothing.
func (w *world) npRule(id, dir string, i int, namespace string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) npRule {
	kr := npRule{anyPeer: len(peers) == 0}
	for j, p := range peers {
		where := func() string { return id + " " + dir + "[" + itoa(i) + "] peer " + itoa(j) }
		if p.IPBlock != nil {
			if p.PodSelector != nil || p.NamespaceSelector != nil {
				w.problem("networkpolicy %s: ipBlock with a selector: left out", where())
				continue
			}
			peer, err := cidrPeer(p.IPBlock.CIDR, p.IPBlock.Except)
			if err != nil {
				w.problem("networkpolicy %s: %v: left out", where(), err)
				continue
			}
			kr.peers = append(kr.peers, peerSpec{fixed: []api.Peer{peer}})
			continue
		}
		if p.PodSelector == nil && p.NamespaceSelector == nil {
			w.problem("networkpolicy %s: empty peer: left out", where())
			continue
		}
		g := group{scoped: true, only: namespace, pods: everything()}
		var err error
		if p.PodSelector != nil {
			if g.pods, err = w.parseSel(p.PodSelector); err != nil {
				w.problem("networkpolicy %s: podSelector: %v: left out", where(), err)
				continue
			}
		}
		if p.NamespaceSelector != nil {
			g.scoped, g.only = false, ""
			if g.nss, err = w.parseSel(p.NamespaceSelector); err != nil {
				w.problem("networkpolicy %s: namespaceSelector: %v: left out", where(), err)
				continue
			}
		}
		kr.peers = append(kr.peers, peerSpec{g: &g})
	}
	if !kr.anyPeer && len(kr.peers) == 0 {
		return npRule{} // no peer left: matches nothing
	}
	for j, p := range ports {
		ps, err := npPort(p)
		if err != nil {
			w.problem("networkpolicy %s %s[%d] port %d: %v: left out", id, dir, i, j, err)
			continue
		}
		kr.ports = append(kr.ports, ps)
	}
	if len(ports) > 0 && len(kr.ports) == 0 {
		return npRule{} // no port left: matches nothing
	}
	return kr
}

func npPort(p networkingv1.NetworkPolicyPort) (portSpec, error) {
	proto := "TCP"
	if p.Protocol != nil {
		proto = string(*p.Protocol)
	}
	rp, ok := romanaProto(corev1Proto(proto))
	if !ok {
		return portSpec{}, errorf("protocol %q is not TCP, UDP or SCTP", proto)
	}
	ps := portSpec{proto: rp}
	switch {
	case p.Port == nil:
		if p.EndPort != nil {
			return portSpec{}, errorf("endPort without port")
		}
		ps.all = true
	case p.Port.Type == intstr.String:
		if p.EndPort != nil {
			return portSpec{}, errorf("endPort with named port %q", p.Port.StrVal)
		}
		ps.proto, ps.named, ps.namedProto = "", p.Port.StrVal, corev1Proto(proto)
	default:
		n := p.Port.IntVal
		if n < 1 || n > 65535 {
			return portSpec{}, errorf("port %d is out of range 1-65535", n)
		}
		ps.port = uint16(n)
		if p.EndPort != nil {
			e := *p.EndPort
			if e < n || e > 65535 {
				return portSpec{}, errorf("endPort %d is not in %d-65535", e, n)
			}
			if e > n {
				ps.lo, ps.hi = uint16(n), uint16(e)
			}
		}
	}
	return ps, nil
}

// cidrPeer compiles an ipBlock or a CNP network. Prefixes with bits set
// below their length are taken as their network, as Kubernetes does.
func cidrPeer(c string, except []string) (api.Peer, error) {
	p, err := netip.ParsePrefix(c)
	if err != nil {
		return api.Peer{}, errorf("cidr %q: %v", c, err)
	}
	p = p.Masked()
	out := api.Peer{CIDR: p.String()}
	for _, e := range except {
		x, err := netip.ParsePrefix(e)
		if err != nil {
			return api.Peer{}, errorf("except %q: %v", e, err)
		}
		x = x.Masked()
		if x.Addr().Is4() != p.Addr().Is4() || x.Bits() < p.Bits() || !p.Contains(x.Addr()) {
			return api.Peer{}, errorf("except %s is not within cidr %s", x, p)
		}
		out.Except = append(out.Except, x.String())
	}
	slices.Sort(out.Except)
	out.Except = slices.Compact(out.Except)
	return out, nil
}

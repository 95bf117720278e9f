package netpol

import (
	"fmt"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/romana/romana/api"
)

// CNPPriority maps a ClusterNetworkPolicy priority (0..1000, lower first)
// to a Romana priority in its tier: 1 + 64*p, so 0 → 1 and 1000 → 64001,
// monotonic, with room between two CNP priorities. Out-of-range values are
// clamped (and reported by Compile). Policies of equal CNP priority get
// equal Romana priorities and are ordered by name, that is by CNP name;
// the API leaves that order to the implementation.
func CNPPriority(p int32) int {
	p = max(0, min(p, 1000))
	return 1 + 64*int(p)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func itoa(i int) string { return strconv.Itoa(i) }

func corev1Proto(s string) corev1.Protocol { return corev1.Protocol(s) }

// clusterNetworkPolicy compiles one ClusterNetworkPolicy
// (policy.networking.k8s.io/v1alpha2) into one policy per direction (or,
// when its subjects resolve ingress named ports differently, one per way
// of resolving them), in tier admin or baseline, rules in order,
// Accept/Deny/Pass → allow/deny/pass.
func (w *world) clusterNetworkPolicy(c v1alpha2.ClusterNetworkPolicy) []api.Policy {
	id := "clusternetworkpolicy " + c.Name
	failClosed := false // the policy is not understood: its accept rules match nothing
	var tier string
	switch c.Spec.Tier {
	case v1alpha2.AdminTier:
		tier = api.TierAdmin
	case v1alpha2.BaselineTier:
		tier = api.TierBaseline
	default:
		w.problem("%s: tier %q is unknown: compiled in tier admin without its Accept rules", id, c.Spec.Tier)
		tier, failClosed = api.TierAdmin, true
	}
	if c.Spec.Priority < 0 || c.Spec.Priority > 1000 {
		w.problem("%s: priority %d is out of range 0-1000: clamped", id, c.Spec.Priority)
	}
	var subject group
	var err error
	switch s := c.Spec.Subject; {
	case s.Namespaces != nil && s.Pods == nil:
		subject.pods = everything()
		subject.nss, err = w.parseSel(s.Namespaces)
	case s.Pods != nil && s.Namespaces == nil:
		subject.nss, err = w.parseSel(&s.Pods.NamespaceSelector)
		if err == nil {
			subject.pods, err = w.parseSel(&s.Pods.PodSelector)
		}
	default:
		err = errorf("set exactly one of namespaces and pods")
	}
	if err != nil {
		w.problem("%s: subject: %v: applied to every pod, without its Accept rules", id, err)
		subject = group{nss: everything(), pods: everything()}
		failClosed = true
	}
	sels := w.subjectSelectors(subject)
	var out []api.Policy
	for _, dir := range []string{api.DirectionIngress, api.DirectionEgress} {
		var krs []cnpRule
		kind := "cnpi"
		if dir == api.DirectionIngress {
			for i, r := range c.Spec.Ingress {
				var peers []v1alpha2.ClusterNetworkPolicyEgressPeer
				for _, p := range r.From {
					peers = append(peers, v1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: p.Namespaces, Pods: p.Pods})
				}
				krs = append(krs, w.cnpRule(fmt.Sprintf("%s ingress[%d]", id, i), r.Action, peers, r.Protocols, failClosed))
			}
		} else {
			kind = "cnpe"
			for i, r := range c.Spec.Egress {
				krs = append(krs, w.cnpRule(fmt.Sprintf("%s egress[%d]", id, i), r.Action, r.To, r.Protocols, failClosed))
			}
		}
		if len(krs) == 0 {
			continue
		}
		desc := "Kubernetes ClusterNetworkPolicy " + c.Name + " (" + string(c.Spec.Tier) + ", priority " + itoa(int(c.Spec.Priority)) + ", " + dir + ")"
		mk := func(kind string, to []api.Selector, res resolver) []api.Policy {
			var rules []api.Rule
			for _, kr := range krs {
				if kr.denyAll {
					rules = append(rules, api.Rule{Action: api.ActionDeny, Protocol: api.ProtoAny})
					continue
				}
				rules = append(rules, w.rules(kr.action, false, kr.peers, kr.ports, res)...)
			}
			if len(rules) == 0 {
				return nil
			}
			return []api.Policy{{Name: w.name(kind, c.Name), Description: desc, Tier: tier, Priority: CNPPriority(c.Spec.Priority),
				Direction: []string{dir}, AppliedTo: to, Rules: rules}}
		}
		if dir == api.DirectionEgress {
			out = append(out, mk(kind, sels, nil)...)
			continue
		}
		var allPorts [][]portSpec
		for _, kr := range krs {
			allPorts = append(allPorts, kr.ports)
		}
		sigs, by := targetGroups(w.members(subject), namedPorts(allPorts...))
		if len(sigs) == 1 {
			var first *pod
			if ps := by[sigs[0]]; len(ps) > 0 {
				first = ps[0]
			}
			out = append(out, mk(kind, sels, podResolver(first))...)
			continue
		}
		for _, sig := range sigs {
			ps := by[sig]
			s := api.Selector{Set: w.podsSet("cnp-subject:"+subject.key()+"|sig:"+sig, ps)}
			out = append(out, mk(kind+"-g"+hash(sig)[:8], []api.Selector{s}, podResolver(ps[0]))...)
		}
	}
	return out
}

// subjectSelectors compiles a CNP subject: masked matches where exact,
// else one set of the subject pods.
func (w *world) subjectSelectors(g group) []api.Selector {
	var out []api.Selector
	for _, p := range w.parts(g, false) {
		out = append(out, api.Selector{Tenant: p.tenant, Segment: p.segment, Set: p.set})
	}
	return out
}

type cnpRule struct {
	action  string
	denyAll bool // a deny or pass rule that could not be read: deny all
	peers   []peerSpec
	ports   []portSpec
}

// cnpRule parses one CNP rule. What it cannot read makes an Accept rule
// match less (a peer or protocol left out; nothing when none is left) and
// a Deny or Pass rule deny everything, as the API prescribes ("fail
// closed").
func (w *world) cnpRule(where string, action v1alpha2.ClusterNetworkPolicyRuleAction, peers []v1alpha2.ClusterNetworkPolicyEgressPeer,
	protos []v1alpha2.ClusterNetworkPolicyProtocol, failClosed bool) cnpRule {
	var kr cnpRule
	switch action {
	case v1alpha2.ClusterNetworkPolicyRuleActionAccept:
		kr.action = api.ActionAllow
	case v1alpha2.ClusterNetworkPolicyRuleActionDeny:
		kr.action = api.ActionDeny
	case v1alpha2.ClusterNetworkPolicyRuleActionPass:
		kr.action = api.ActionPass
	default:
		w.problem("%s: action %q is unknown: denies all", where, action)
		return cnpRule{denyAll: true}
	}
	accept := kr.action == api.ActionAllow
	if failClosed && accept {
		return cnpRule{action: kr.action} // the policy itself is not understood: allow nothing
	}
	bad := func(format string, args ...any) bool {
		msg := fmt.Sprintf(format, args...)
		if accept {
			w.problem("%s: %s: left out", where, msg)
			return false
		}
		w.problem("%s: %s: the %s rule denies all", where, msg, action)
		return true
	}
	if len(peers) == 0 && bad("no peers") {
		return cnpRule{denyAll: true}
	}
	for j, p := range peers {
		pw := fmt.Sprintf("peer %d", j)
		n := 0
		for _, set := range []bool{p.Namespaces != nil, p.Pods != nil, p.Nodes != nil, len(p.Networks) > 0, len(p.DomainNames) > 0} {
			if set {
				n++
			}
		}
		if n != 1 {
			if bad("%s: %d of namespaces, pods, nodes, networks, domainNames set, want 1", pw, n) {
				return cnpRule{denyAll: true}
			}
			continue
		}
		switch {
		case p.Namespaces != nil:
			s, err := w.parseSel(p.Namespaces)
			if err != nil {
				if bad("%s: namespaces: %v", pw, err) {
					return cnpRule{denyAll: true}
				}
				continue
			}
			kr.peers = append(kr.peers, peerSpec{g: &group{nss: s, pods: everything()}})
		case p.Pods != nil:
			ns, err := w.parseSel(&p.Pods.NamespaceSelector)
			var ps sel
			if err == nil {
				ps, err = w.parseSel(&p.Pods.PodSelector)
			}
			if err != nil {
				if bad("%s: pods: %v", pw, err) {
					return cnpRule{denyAll: true}
				}
				continue
			}
			kr.peers = append(kr.peers, peerSpec{g: &group{nss: ns, pods: ps}})
		case len(p.Networks) > 0:
			var fixed []api.Peer
			ok := true
			for _, c := range p.Networks {
				peer, err := cidrPeer(string(c), nil)
				if err != nil {
					ok = false
					if bad("%s: network: %v", pw, err) {
						return cnpRule{denyAll: true}
					}
					break
				}
				fixed = append(fixed, peer)
			}
			if ok {
				kr.peers = append(kr.peers, peerSpec{fixed: fixed})
			}
		case p.Nodes != nil:
			fixed, err := w.nodePeers(p.Nodes)
			if err != nil {
				if bad("%s: nodes: %v", pw, err) {
					return cnpRule{denyAll: true}
				}
				continue
			}
			if len(fixed) == 0 {
				// No node matches: an empty set keeps the peer matching nothing.
				s, _ := w.parseSel(p.Nodes)
				fixed = []api.Peer{{Set: w.set("nodes:"+s.text, nil, nil)}}
			}
			kr.peers = append(kr.peers, peerSpec{fixed: fixed})
		default:
			if bad("%s: domainNames are not supported", pw) {
				return cnpRule{denyAll: true}
			}
		}
	}
	if len(kr.peers) == 0 {
		return cnpRule{action: kr.action} // accept with no peer left: matches nothing
	}
	for j, pr := range protos {
		ps, err := cnpProto(pr)
		if err != nil {
			if bad("protocol %d: %v", j, err) {
				return cnpRule{denyAll: true}
			}
			continue
		}
		kr.ports = append(kr.ports, ps)
	}
	if len(protos) > 0 && len(kr.ports) == 0 {
		return cnpRule{action: kr.action} // accept with no protocol left: matches nothing
	}
	return kr
}

// nodePeers compiles a nodes selector to the nodes' addresses
// (InternalIP and ExternalIP, one prefix each), from Input.Nodes.
func (w *world) nodePeers(ls *metav1.LabelSelector) ([]api.Peer, error) {
	if len(w.nodes) == 0 {
		return nil, errorf("no nodes in the input to resolve them")
	}
	s, err := w.parseSel(ls)
	if err != nil {
		return nil, err
	}
	var out []api.Peer
	for _, n := range w.nodes {
		if !s.s.Matches(labels.Set(n.Labels)) {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			ip, err := netip.ParseAddr(a.Address)
			if err != nil {
				w.problem("node %s: address %q: %v", n.Name, a.Address, err)
				continue
			}
			ip = ip.Unmap()
			out = append(out, api.Peer{CIDR: netip.PrefixFrom(ip, ip.BitLen()).String()})
		}
	}
	return out, nil
}

func cnpProto(p v1alpha2.ClusterNetworkPolicyProtocol) (portSpec, error) {
	n := 0
	var proto string
	var dp *v1alpha2.Port
	if p.TCP != nil {
		n, proto, dp = n+1, api.ProtoTCP, p.TCP.DestinationPort
	}
	if p.UDP != nil {
		n, proto, dp = n+1, api.ProtoUDP, p.UDP.DestinationPort
	}
	if p.SCTP != nil {
		n, proto, dp = n+1, api.ProtoSCTP, p.SCTP.DestinationPort
	}
	if p.DestinationNamedPort != "" {
		n++
	}
	if n != 1 {
		return portSpec{}, errorf("%d of tcp, udp, sctp, destinationNamedPort set, want 1", n)
	}
	if p.DestinationNamedPort != "" {
		return portSpec{named: p.DestinationNamedPort}, nil
	}
	ps := portSpec{proto: proto}
	switch {
	case dp == nil:
		ps.all = true
	case dp.Range != nil && dp.Number != 0:
		return portSpec{}, errorf("both number and range set")
	case dp.Range != nil:
		lo, hi := dp.Range.Start, dp.Range.End
		if lo < 1 || hi > 65535 || lo > hi {
			return portSpec{}, errorf("range %d-%d is not within 1-65535 in order", lo, hi)
		}
		ps.lo, ps.hi = uint16(lo), uint16(hi)
		if lo == hi {
			ps.port, ps.hi = uint16(lo), 0
		}
	default:
		if dp.Number < 1 || dp.Number > 65535 {
			return portSpec{}, errorf("port %d is out of range 1-65535", dp.Number)
		}
		ps.port = uint16(dp.Number)
	}
	return ps, nil
}

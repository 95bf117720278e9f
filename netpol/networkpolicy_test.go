package netpol

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/romana/romana/api"
)

// Builders of NetworkPolicies, in the shape of the upstream e2e tests.

func labelSel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func exprSel(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func podPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func nsPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func nsPodPeer(ns, pod *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pod}
}

func ipPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func port(proto corev1.Protocol, n int32) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

func portRange(proto corev1.Protocol, n, end int32) networkingv1.NetworkPolicyPort {
	p := port(proto, n)
	p.EndPort = &end
	return p
}

func namedPort(proto corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	p := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

func protoOnly(proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto}
}

type npOpt func(*networkingv1.NetworkPolicySpec)

func from(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) npOpt {
	return func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = append(s.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports})
	}
}

func to(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) npOpt {
	return func(s *networkingv1.NetworkPolicySpec) {
		s.Egress = append(s.Egress, networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports})
	}
}

func types(ts ...networkingv1.PolicyType) npOpt {
	return func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = ts }
}

var (
	tIn  = networkingv1.PolicyTypeIngress
	tEg  = networkingv1.PolicyTypeEgress
	pTCP = corev1.ProtocolTCP
	pUDP = corev1.ProtocolUDP
	pSCT = corev1.ProtocolSCTP
)

func ports(ps ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort { return ps }

func newNP(ns, name string, target *metav1.LabelSelector, opts ...npOpt) networkingv1.NetworkPolicy {
	np := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if target != nil {
		np.Spec.PodSelector = *target
	}
	for _, o := range opts {
		o(&np.Spec)
	}
	return np
}

func (c *cluster) putNP(np networkingv1.NetworkPolicy) {
	for i := range c.nps {
		if c.nps[i].Namespace == np.Namespace && c.nps[i].Name == np.Name {
			c.nps[i] = np
			return
		}
	}
	c.nps = append(c.nps, np)
}

func (c *cluster) deleteNP(ns, name string) {
	for i := range c.nps {
		if c.nps[i].Namespace == ns && c.nps[i].Name == name {
			c.nps = append(c.nps[:i], c.nps[i+1:]...)
			return
		}
	}
}

// expect is the truth table on one probe.
type expect struct {
	p    probe
	want func(r *reach)
}

type step struct {
	name   string
	change func(c *cluster)
	expect []expect
}

var (
	all   = "*/*"
	udp81 = probe{api.ProtoUDP, 81}
	udp80 = probe{api.ProtoUDP, 80}
	sct81 = probe{api.ProtoSCTP, 81}
	tcp82 = probe{api.ProtoTCP, 82}
)

func isolatedIn(pods ...string) func(r *reach) {
	return func(r *reach) {
		for _, p := range pods {
			r.set(all, p, false)
		}
	}
}

// TestNetworkPolicyTruthTables runs the scenarios of Kubernetes'
// test/e2e/network/netpol (and Cyclonus) on namespaces x, y, z × pods a,
// b, c: each compiled by Compile, each cell decided by verdict over the
// compiled policies and sets, against a table written from NetworkPolicy
// semantics. Loopback cells are not checked (as upstream).
func TestNetworkPolicyTruthTables(t *testing.T) {
	nsIs := func(v string) *metav1.LabelSelector { return labelSel("ns", v) }
	podIs := func(v string) *metav1.LabelSelector { return labelSel("pod", v) }
	ingressOnly := types(tIn)
	egressOnly := types(tEg)
	cases := []struct {
		name  string
		steps []step
	}{
		{"default-deny-ingress", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "deny-ingress", nil, ingressOnly))
		}, []expect{{tcp80, isolatedIn("x/*")}}}}},

		{"default-deny-all", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "deny-all", nil, types(tIn, tEg)))
		}, []expect{{tcp80, func(r *reach) { r.set(all, "x/*", false).set("x/*", all, false) }}}}}},

		{"default-deny-egress", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "deny-egress", nil, egressOnly))
		}, []expect{{tcp80, func(r *reach) { r.set("x/*", all, false) }}}}}},

		{"allow-within-namespace", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-x", nil, from(nil, podPeer(&metav1.LabelSelector{}))))
		}, []expect{{tcp80, func(r *reach) { r.set(all, "x/*", false).set("x/*", "x/*", true) }}}}}},

		{"x-a-allows-x-b by podSelector", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "x-a-allows-x-b", podIs("a"), from(nil, podPeer(podIs("b")))))
		}, []expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("x/b", "x/a", true) }}}}}},

		{"deny-all then allow-all-to-a", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "deny-all", nil, ingressOnly))
			c.putNP(newNP("x", "allow-all-to-a", podIs("a"), from(nil, nsPodPeer(&metav1.LabelSelector{}, &metav1.LabelSelector{}))))
		}, []expect{{tcp80, func(r *reach) { r.set(all, "x/*", false).set(all, "x/a", true) }}}}}},

		{"allow from all namespaces", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-from-another-ns", podIs("a"), from(nil, nsPeer(&metav1.LabelSelector{}))))
		}, []expect{{tcp80, func(r *reach) {}}}}}},

		{"allow from a namespace by label", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-client-a-via-ns-selector", podIs("a"), from(nil, nsPeer(nsIs("y")))))
		}, []expect{{tcp80, func(r *reach) { r.set("x/*", "x/a", false).set("z/*", "x/a", false) }}}}}},

		{"podSelector matchExpressions", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "x-a-allows-x-b", podIs("a"), from(nil, podPeer(exprSel("pod", metav1.LabelSelectorOpIn, "b")))))
		}, []expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("x/b", "x/a", true) }}}}}},

		{"namespaceSelector matchExpressions", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-ns-y", podIs("a"), from(nil, nsPeer(exprSel("kubernetes.io/metadata.name", metav1.LabelSelectorOpIn, "y")))))
		}, []expect{{tcp80, func(r *reach) { r.set("x/*", "x/a", false).set("z/*", "x/a", false) }}}}}},

		{"podSelector or namespaceSelector", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "ns-or-pod", podIs("a"), from(nil,
				nsPeer(exprSel("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "x")), podPeer(podIs("b")))))
		}, []expect{{tcp80, func(r *reach) { r.set("x/c", "x/a", false) }}}}}},

		{"podSelector and namespaceSelector", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "ns-and-pod", podIs("a"), from(nil,
				nsPodPeer(exprSel("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "x"), podIs("b")))))
		}, []expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("y/b", "x/a", true).set("z/b", "x/a", true) }}}}}},

		{"multiple podSelectors and namespaceSelectors", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "multi", podIs("a"), from(nil,
				nsPodPeer(exprSel("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "x"), exprSel("pod", metav1.LabelSelectorOpIn, "a", "b")))))
		}, []expect{{tcp80, func(r *reach) {
			r.set(all, "x/a", false).set("y/a", "x/a", true).set("y/b", "x/a", true).set("z/a", "x/a", true).set("z/b", "x/a", true)
		}}}}}},

		{"ingress on port 81 only", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-81", podIs("a"), from(ports(port(pTCP, 81)), nsPeer(nsIs("y")))))
		}, []expect{
			{tcp80, isolatedIn("x/a")},
			{tcp81, func(r *reach) { r.set(all, "x/a", false).set("y/*", "x/a", true) }},
		}}}},

		{"multiple stacked policies", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-80-from-y", podIs("a"), from(ports(port(pTCP, 80)), nsPeer(nsIs("y")))))
			c.putNP(newNP("x", "allow-81-from-z", podIs("a"), from(ports(port(pTCP, 81)), nsPeer(nsIs("z")))))
		}, []expect{
			{tcp80, func(r *reach) { r.set(all, "x/a", false).set("y/*", "x/a", true) }},
			{tcp81, func(r *reach) { r.set(all, "x/a", false).set("z/*", "x/a", true) }},
		}}}},

		{"named port ingress", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-serve-81", nil, from(ports(namedPort(pTCP, "serve-81-tcp")))))
		}, []expect{
			{tcp80, isolatedIn("x/*")},
			{tcp81, func(r *reach) {}},
			{udp81, isolatedIn("x/*")},
		}}}},

		{"named port ingress from a namespace", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "allow-serve-80-from-y", nil, from(ports(namedPort(pTCP, "serve-80-tcp")), nsPeer(nsIs("y")))))
		}, []expect{
			{tcp80, func(r *reach) { r.set(all, "x/*", false).set("y/*", "x/*", true) }},
			{tcp81, isolatedIn("x/*")},
		}}}},

		{"named port ingress resolved per pod", []step{{"", func(c *cluster) {
			// x/b serves "web" on 81, the others on 80.
			for i := range c.pods {
				p := &c.pods[i]
				n := int32(80)
				if p.Namespace == "x" && p.Name == "b" {
					n = 81
				}
				p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "web", ContainerPort: n})
			}
			c.putNP(newNP("x", "allow-web", nil, from(ports(namedPort(pTCP, "web")))))
		}, []expect{
			{tcp80, isolatedIn("x/b")},
			{tcp81, isolatedIn("x/a", "x/c")},
		}}}},

		{"named port egress", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "egress-serve-80", nil, egressOnly, to(ports(namedPort(pTCP, "serve-80-tcp")))))
		}, []expect{
			{tcp80, func(r *reach) {}},
			{tcp81, func(r *reach) { r.set("x/*", all, false) }},
		}}}},

		{"egress to pod and namespace on port 80", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "egress-y-b", podIs("a"), egressOnly, to(ports(port(pTCP, 80)), nsPodPeer(nsIs("y"), podIs("b")))))
		}, []expect{
			{tcp80, func(r *reach) { r.set("x/a", all, false).set("x/a", "y/b", true) }},
			{tcp81, func(r *reach) { r.set("x/a", all, false) }},
		}}}},

		{"ipBlock egress", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "egress-cidr", podIs("a"), egressOnly, to(nil, ipPeer(c.ip("y/b").String()+"/32"))))
		}, []expect{{tcp80, func(r *reach) { r.set("x/a", all, false).set("x/a", "y/b", true) }}}}}},

		{"ipBlock with except", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "egress-except", podIs("a"), egressOnly, to(nil, ipPeer("10.0.0.0/8", c.ip("y/b").String()+"/32"))))
		}, []expect{{tcp80, func(r *reach) { r.set("x/a", "y/b", false) }}}}}},

		{"ipBlock except overlapped by another policy", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "egress-except", podIs("a"), egressOnly, to(nil, ipPeer("10.0.0.0/8", c.ip("y/b").String()+"/32"))))
			c.putNP(newNP("x", "egress-y-b", podIs("a"), egressOnly, to(nil, ipPeer(c.ip("y/b").String()+"/32"))))
		}, []expect{{tcp80, func(r *reach) {}}}}}},

		{"ipBlock ingress with host bits set", []step{{"", func(c *cluster) {
			// 10.1.33.7/8 is taken as 10.0.0.0/8, as Kubernetes does.
			c.putNP(newNP("x", "from-cidr", podIs("a"), from(nil, ipPeer("10.1.33.7/8", c.ip("z/c").String()+"/32"))))
		}, []expect{{tcp80, func(r *reach) { r.set("z/c", "x/a", false) }}}}}},

		{"endPort range", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "range-80-81", podIs("a"), from(ports(portRange(pTCP, 80, 81)), nsPeer(nsIs("y")))))
			c.putNP(newNP("x", "range-81-82", podIs("b"), from(ports(portRange(pTCP, 81, 82)), nsPeer(nsIs("y")))))
		}, []expect{
			{tcp80, func(r *reach) { r.set(all, "x/a", false).set(all, "x/b", false).set("y/*", "x/a", true) }},
			{tcp81, func(r *reach) {
				r.set(all, "x/a", false).set(all, "x/b", false).set("y/*", "x/a", true).set("y/*", "x/b", true)
			}},
			{tcp82, func(r *reach) { r.set(all, "x/a", false).set(all, "x/b", false).set("y/*", "x/b", true) }},
		}}}},

		{"UDP only", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "udp-81", podIs("a"), from(ports(port(pUDP, 81)), nsPeer(nsIs("y")))))
		}, []expect{
			{udp81, func(r *reach) { r.set(all, "x/a", false).set("y/*", "x/a", true) }},
			{tcp81, isolatedIn("x/a")},
		}}}},

		{"SCTP is not TCP", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "sctp-81", podIs("a"), from(ports(port(pSCT, 81)), nsPeer(nsIs("y")))))
		}, []expect{
			{sct81, func(r *reach) { r.set(all, "x/a", false).set("y/*", "x/a", true) }},
			{tcp81, isolatedIn("x/a")},
			{udp81, isolatedIn("x/a")},
		}}}},

		{"any port of one protocol", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "udp-any", podIs("a"), from(ports(protoOnly(pUDP)))))
		}, []expect{
			{udp80, func(r *reach) {}},
			{udp81, func(r *reach) {}},
			{tcp80, isolatedIn("x/a")},
		}}}},

		{"client-side egress deny beats server-side allow", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "deny-egress-a", podIs("a"), egressOnly))
			c.putNP(newNP("y", "allow-from-x-a", podIs("b"), from(nil, nsPodPeer(nsIs("x"), podIs("a")))))
		}, []expect{{tcp80, func(r *reach) { r.set("x/a", all, false).set(all, "y/b", false) }}}}}},

		{"egress allow-all takes precedence", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "egress-y-b-80", podIs("a"), egressOnly, to(ports(port(pTCP, 80)), nsPodPeer(nsIs("y"), podIs("b")))))
			c.putNP(newNP("x", "egress-all", podIs("a"), egressOnly, to(nil)))
		}, []expect{{tcp80, func(r *reach) {}}, {tcp81, func(r *reach) {}}}}}},

		{"ingress and egress together", []step{{"", func(c *cluster) {
			c.putNP(newNP("x", "both", podIs("a"), from(nil, podPeer(podIs("b"))), to(nil, podPeer(podIs("b")))))
		}, []expect{{tcp80, func(r *reach) {
			r.set(all, "x/a", false).set("x/b", "x/a", true).set("x/a", all, false).set("x/a", "x/b", true)
		}}}}}},

		{"policy update", []step{
			{"allow from y", func(c *cluster) {
				c.putNP(newNP("x", "allow", podIs("a"), from(nil, nsPeer(nsIs("y")))))
			}, []expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("y/*", "x/a", true) }}}},
			{"updated to allow from z", func(c *cluster) {
				c.putNP(newNP("x", "allow", podIs("a"), from(nil, nsPeer(nsIs("z")))))
			}, []expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("z/*", "x/a", true) }}}},
		}},

		{"policy delete", []step{
			{"deny-all", func(c *cluster) { c.putNP(newNP("x", "deny-all", nil, types(tIn, tEg))) },
				[]expect{{tcp80, func(r *reach) { r.set(all, "x/*", false).set("x/*", all, false) }}}},
			{"deleted", func(c *cluster) { c.deleteNP("x", "deny-all") }, []expect{{tcp80, func(r *reach) {}}}},
		}},

		{"a peer pod's label changes", []step{
			{"", func(c *cluster) {
				c.putNP(newNP("x", "from-updated", podIs("a"), from(nil, podPeer(labelSel("pod2", "updated")))))
			}, []expect{{tcp80, isolatedIn("x/a")}}},
			{"x/b labelled pod2=updated", func(c *cluster) { c.pod("x/b").Labels["pod2"] = "updated" },
				[]expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("x/b", "x/a", true) }}}},
			{"label removed", func(c *cluster) { delete(c.pod("x/b").Labels, "pod2") }, []expect{{tcp80, isolatedIn("x/a")}}},
		}},

		{"a target pod's label changes", []step{
			{"", func(c *cluster) {
				c.putNP(newNP("x", "deny-isolated", labelSel("target", "isolated"), ingressOnly))
			}, []expect{{tcp80, func(r *reach) {}}}},
			{"x/a labelled target=isolated", func(c *cluster) { c.pod("x/a").Labels["target"] = "isolated" },
				[]expect{{tcp80, isolatedIn("x/a")}}},
		}},

		{"a namespace's label changes", []step{
			{"", func(c *cluster) {
				c.putNP(newNP("x", "from-updated-ns", podIs("a"), from(nil, nsPeer(labelSel("ns2", "updated")))))
			}, []expect{{tcp80, isolatedIn("x/a")}}},
			{"y labelled ns2=updated", func(c *cluster) { c.labelNamespace("y", "ns2", "updated") },
				[]expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("y/*", "x/a", true) }}}},
		}},

		{"a pod is created and deleted", []step{
			{"", func(c *cluster) {
				c.putNP(newNP("x", "from-d", podIs("a"), from(nil, podPeer(podIs("d")))))
			}, []expect{{tcp80, isolatedIn("x/a")}}},
			{"x/d created", func(c *cluster) { c.addPod("x", "d", map[string]string{"pod": "d"}, servePorts(80, 81)...) },
				[]expect{{tcp80, func(r *reach) { r.set(all, "x/a", false).set("x/d", "x/a", true) }}}},
			{"x/d deleted", func(c *cluster) { c.deletePod("x/d") }, []expect{{tcp80, isolatedIn("x/a")}}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := xyz()
			for _, s := range tc.steps {
				s.change(c)
				for _, e := range s.expect {
					want := newReach(c.podKeys(), true)
					e.want(want)
					out := c.check(t, tc.name+" "+s.name, e.p, want)
					if len(out.Problems) > 0 {
						t.Errorf("%s %s: problems %v", tc.name, s.name, out.Problems)
					}
				}
			}
		})
	}
}

// Selectors that are exactly a namespace compile to masked tenant matches,
// with no address set; others to sets.
func TestNamespaceSelectorsAreMasked(t *testing.T) {
	c := xyz()
	c.putNP(newNP("x", "deny-all", nil, types(tIn, tEg)))
	c.putNP(newNP("x", "from-y", nil, from(nil, nsPeer(labelSel("ns", "y")))))
	c.putNP(newNP("x", "to-x", nil, to(nil, podPeer(&metav1.LabelSelector{}))))
	out := Compile(c.input())
	if len(out.Sets) != 0 {
		t.Errorf("sets %v, want none:\n%s", out.Sets, out)
	}
	for _, p := range out.Policies {
		for _, s := range p.AppliedTo {
			if s != (api.Selector{Tenant: "x"}) {
				t.Errorf("policy %s applied to %+v, want tenant x", p.Name, s)
			}
		}
	}
	if !strings.Contains(out.String(), "peers=[{tenant=y}]") || !strings.Contains(out.String(), "peers=[{tenant=x}]") {
		t.Errorf("want tenant peers y and x:\n%s", out)
	}

	c.putNP(newNP("x", "from-pod-b", labelSel("pod", "a"), from(nil, podPeer(labelSel("pod", "b")))))
	out = Compile(c.input())
	if len(out.Sets) != 2 {
		t.Errorf("want 2 sets (targets x/a, peers x/b):\n%s", out)
	}
}

// Segment-label selectors compile to tenant+segment matches while the
// pods' addresses agree; a pod relabelled into another segment keeps its
// address, so the selector falls back to a set and stays exact.
func TestSegmentSelectors(t *testing.T) {
	c := newCluster(Config{})
	c.addNamespace("x", nil)
	c.addNamespace("y", nil)
	seg := DefaultSegmentLabel
	c.addPod("x", "a", map[string]string{seg: "web"})
	c.addPod("x", "b", map[string]string{seg: "web"})
	c.addPod("x", "c", map[string]string{})
	c.addPod("y", "a", map[string]string{seg: "web"})
	c.putNP(newNP("x", "web-from-web", labelSel(seg, "web"), from(nil, podPeer(labelSel(seg, "web")))))
	want := func() *reach {
		r := newReach(c.podKeys(), true)
		for _, p := range c.pods {
			if p.Namespace == "x" && p.Labels[seg] == "web" {
				r.set(all, "x/"+p.Name, false)
				for _, q := range c.pods {
					if q.Namespace == "x" && q.Labels[seg] == "web" {
						r.set("x/"+q.Name, "x/"+p.Name, true)
					}
				}
			}
		}
		return r
	}
	out := c.check(t, "segment", tcp80, want())
	if len(out.Sets) != 0 || !strings.Contains(out.String(), "to=[{tenant=x,segment=web}]") || !strings.Contains(out.String(), "peers=[{tenant=x,segment=web}]") {
		t.Errorf("want tenant+segment matches and no sets:\n%s", out)
	}
	c.pod("x/c").Labels[seg] = "web" // its address stays in segment default
	out = c.check(t, "relabelled", tcp80, want())
	if len(out.Sets) == 0 {
		t.Errorf("x/c's address is not in segment web: want sets:\n%s", out)
	}
}

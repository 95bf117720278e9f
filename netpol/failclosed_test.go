package netpol

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

func cnpIn(name string, tier v1alpha2.Tier, prio int32, subject *metav1.LabelSelector, rules ...v1alpha2.ClusterNetworkPolicyIngressRule) v1alpha2.ClusterNetworkPolicy {
	return v1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.ClusterNetworkPolicySpec{
		Tier: tier, Priority: prio, Subject: v1alpha2.ClusterNetworkPolicySubject{Namespaces: subject}, Ingress: rules}}
}

func inRule(action v1alpha2.ClusterNetworkPolicyRuleAction, protos []v1alpha2.ClusterNetworkPolicyProtocol, from ...v1alpha2.ClusterNetworkPolicyIngressPeer) v1alpha2.ClusterNetworkPolicyIngressRule {
	return v1alpha2.ClusterNetworkPolicyIngressRule{Action: action, From: from, Protocols: protos}
}

var (
	accept = v1alpha2.ClusterNetworkPolicyRuleActionAccept
	deny   = v1alpha2.ClusterNetworkPolicyRuleActionDeny
	pass   = v1alpha2.ClusterNetworkPolicyRuleActionPass
)

// What Compile does not understand it reports, and compiles so that it
// never allows more than the object says: allow rules (and Accept) match
// less, deny and pass rules deny all they could have matched. The
// original Romana widened policies it did not understand; these tables
// pin that it does not happen here.
func TestFailClosed(t *testing.T) {
	bad := exprSel("pod", "Near", "a")
	nsY := &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}
	nsX := &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "x"}}
	domain := v1alpha2.ClusterNetworkPolicyIngressPeer{} // no field set: a peer of a newer API version
	cases := []struct {
		name    string
		setup   func(c *cluster)
		problem string
		want    func(r *reach)
	}{
		{"NetworkPolicy podSelector not understood: whole namespace isolated", func(c *cluster) {
			c.putNP(newNP("x", "bad-target", bad, from(nil)))
		}, "bad-target: podSelector", isolatedIn("x/*")},

		{"the only peer not understood: the rule matches nothing, not everything", func(c *cluster) {
			c.putNP(newNP("x", "bad-peer", podIs("a"), from(nil, podPeer(bad))))
		}, "bad-peer ingress[0] peer 0: podSelector", isolatedIn("x/a")},

		{"one peer not understood: the others still allow", func(c *cluster) {
			c.putNP(newNP("x", "bad-cidr", podIs("a"), from(nil, ipPeer("10.0.0.0/33"), podPeer(podIs("b")))))
		}, "bad-cidr ingress[0] peer 0", func(r *reach) { r.set(all, "x/a", false).set("x/b", "x/a", true) }},

		{"the only port not understood: the rule matches nothing, not every port", func(c *cluster) {
			c.putNP(newNP("x", "bad-port", podIs("a"), from(ports(port("ICMP", 80)), nsPeer(nsY))))
		}, "protocol \"ICMP\"", isolatedIn("x/a")},

		{"an except outside its cidr: the peer is left out, not widened", func(c *cluster) {
			c.putNP(newNP("x", "bad-except", podIs("a"), from(nil, ipPeer("10.1.0.0/16", "10.2.0.0/24"))))
		}, "is not within cidr", isolatedIn("x/a")},

		{"CNP Deny with a peer not understood denies all", func(c *cluster) {
			c.cnps = append(c.cnps, cnpIn("deny-odd", v1alpha2.AdminTier, 10, nsX, inRule(deny, nil, domain)))
		}, "the Deny rule denies all", isolatedIn("x/*")},

		{"CNP Pass with a protocol not understood denies all", func(c *cluster) {
			c.cnps = append(c.cnps, cnpIn("pass-odd", v1alpha2.AdminTier, 10, nsX,
				inRule(pass, []v1alpha2.ClusterNetworkPolicyProtocol{{}}, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: nsY})))
		}, "the Pass rule denies all", isolatedIn("x/*")},

		{"CNP Accept with a peer not understood matches nothing", func(c *cluster) {
			c.cnps = append(c.cnps, cnpIn("accept-odd", v1alpha2.AdminTier, 10, nsX, inRule(accept, nil, domain)))
			c.cnps = append(c.cnps, cnpIn("baseline-deny", v1alpha2.BaselineTier, 10, nsX,
				inRule(deny, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: &metav1.LabelSelector{}})))
		}, "accept-odd ingress[0]: peer 0", isolatedIn("x/*")},

		{"CNP of an unknown tier: its Deny still denies, its Accept allows nothing", func(c *cluster) {
			c.cnps = append(c.cnps, cnpIn("odd-tier", "Middle", 10, nsX,
				inRule(accept, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: nsY}),
				inRule(deny, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: nsY})))
		}, "tier \"Middle\" is unknown", func(r *reach) { r.set("y/*", "x/*", false) }},

		{"CNP subject not understood: its Deny applies to every pod", func(c *cluster) {
			p := cnpIn("odd-subject", v1alpha2.AdminTier, 10, nil,
				inRule(deny, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: nsY}))
			c.cnps = append(c.cnps, p)
		}, "subject: set exactly one", func(r *reach) { r.set("y/*", all, false) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := xyz()
			tc.setup(c)
			want := newReach(c.podKeys(), true)
			tc.want(want)
			out := c.check(t, tc.name, tcp80, want)
			if !strings.Contains(strings.Join(out.Problems, "\n"), tc.problem) {
				t.Errorf("problems %q, want one with %q", out.Problems, tc.problem)
			}
		})
	}
}

// Egress to nodes: from Input.Nodes when given (their addresses), else
// reported, and a Deny fails closed.
func TestNodePeers(t *testing.T) {
	c := xyz()
	cnp := v1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "no-nodes"}, Spec: v1alpha2.ClusterNetworkPolicySpec{
		Tier: v1alpha2.AdminTier, Priority: 5, Subject: v1alpha2.ClusterNetworkPolicySubject{Namespaces: labelSel("ns", "x")},
		Egress: []v1alpha2.ClusterNetworkPolicyEgressRule{{Action: deny, To: []v1alpha2.ClusterNetworkPolicyEgressPeer{{Nodes: labelSel("role", "control")}}}}}}
	c.cnps = append(c.cnps, cnp)
	out := c.check(t, "nodes unknown", tcp80, newReach(c.podKeys(), true).set("x/*", all, false))
	if !strings.Contains(strings.Join(out.Problems, "\n"), "no nodes in the input") {
		t.Errorf("problems %v", out.Problems)
	}
	node := func(name, ip string, l map[string]string) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}}}
	}
	c.nodes = []corev1.Node{node("n1", "192.168.0.1", map[string]string{"role": "control"}), node("n2", "192.168.0.2", nil)}
	out = c.check(t, "nodes known", tcp80, newReach(c.podKeys(), true))
	if len(out.Problems) != 0 || !strings.Contains(out.String(), "rule 0 deny any peers=[{cidr=192.168.0.1/32}]") {
		t.Errorf("want a deny to n1's address only:\n%s", out)
	}
}

func podIs(v string) *metav1.LabelSelector { return labelSel("pod", v) }

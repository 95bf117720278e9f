package netpol

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// scaleCluster is the scale point: 100 namespaces, 1,000 pods,
// 200 NetworkPolicies (per namespace: ingress from the same app in any
// namespace on a named port, and egress to one other namespace), and a
// few ClusterNetworkPolicies.
func scaleCluster() *cluster {
	c := newCluster(Config{})
	for n := range 100 {
		c.addNamespace(fmt.Sprintf("ns%02d", n), map[string]string{"team": fmt.Sprintf("t%d", n%10)})
	}
	for i := range 1000 {
		ns := fmt.Sprintf("ns%02d", i%100)
		c.addPod(ns, fmt.Sprintf("p%d", i), map[string]string{"app": fmt.Sprintf("app%d", i%7), "tier": []string{"web", "db"}[i%2]}, servePorts(80, 81)...)
	}
	// The test plan's 4-bit tenant field does not hold 100 tenants: give
	// the pods unique addresses and no placement (not evaluated here).
	c.addrs = nil
	for i := range c.pods {
		ip := fmt.Sprintf("10.%d.%d.%d", 1+i%2, i/250, 1+i%250)
		c.pods[i].Status.PodIP = ip
		c.pods[i].Status.PodIPs[0].IP = ip
	}
	for n := range 100 {
		ns := fmt.Sprintf("ns%02d", n)
		c.putNP(newNP(ns, "web", labelSel("tier", "web"), from(ports(namedPort(pTCP, "serve-80-tcp"), port(pTCP, 443)),
			nsPodPeer(&metav1.LabelSelector{}, labelSel("app", fmt.Sprintf("app%d", n%7))))))
		c.putNP(newNP(ns, "egress", nil, types(tEg), to(nil, nsPeer(labelSel("kubernetes.io/metadata.name", fmt.Sprintf("ns%02d", (n+1)%100))),
			ipPeer("192.168.0.0/16"))))
	}
	for i := range 5 {
		c.cnps = append(c.cnps, cnpIn(fmt.Sprintf("team-%d", i), v1alpha2.AdminTier, int32(10+i), labelSel("team", fmt.Sprintf("t%d", i)),
			inRule(pass, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: labelSel("team", fmt.Sprintf("t%d", i))}),
			inRule(deny, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: &metav1.LabelSelector{}})))
	}
	return c
}

// TestScaleFigures prints what the scale point compiles to (figures, not
// assertions, beyond "no problems").
func TestScaleFigures(t *testing.T) {
	c := scaleCluster()
	out := Compile(c.input())
	rules, elems := 0, 0
	for _, p := range out.Policies {
		rules += len(p.Rules)
	}
	for _, s := range out.Sets {
		elems += len(s.Addresses)
	}
	if len(out.Problems) > 0 {
		t.Errorf("problems: %v", out.Problems)
	}
	t.Logf("100 namespaces, %d pods, %d NetworkPolicies, %d CNPs: %d policies, %d rules, %d sets, %d set elements",
		len(c.pods), len(c.nps), len(c.cnps), len(out.Policies), rules, len(out.Sets), elems)
}

func BenchmarkCompile(b *testing.B) {
	in := scaleCluster().input()
	for b.Loop() {
		Compile(in)
	}
}

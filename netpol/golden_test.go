package netpol

import (
	"flag"
	"os"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt from the current output")

// TestGolden shows, as text, what a representative set of Kubernetes
// objects compiles to on x, y, z × a, b, c (rewrite with -update).
func TestGolden(t *testing.T) {
	c := xyz()
	c.putNP(newNP("x", "deny-all", nil, types(tIn, tEg)))
	c.putNP(newNP("x", "a-from-y-b", podIs("a"), from(ports(port(pTCP, 80), portRange(pTCP, 8000, 8080), port(pUDP, 53)),
		nsPodPeer(labelSel("ns", "y"), podIs("b")), nsPeer(labelSel("ns", "z")))))
	c.putNP(newNP("x", "web", nil, from(ports(namedPort(pTCP, "serve-81-tcp")))))
	c.putNP(newNP("y", "egress", nil, types(tEg), to(ports(namedPort(pTCP, "serve-80-tcp")), podPeer(podIs("c"))),
		to(nil, ipPeer("192.168.0.0/16", "192.168.7.0/24"))))
	c.cnps = append(c.cnps,
		cnpIn("guard", v1alpha2.AdminTier, 5, &metav1.LabelSelector{},
			inRule(deny, []v1alpha2.ClusterNetworkPolicyProtocol{{TCP: &v1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &v1alpha2.Port{Number: 22}}}},
				v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: &metav1.LabelSelector{}}),
			inRule(pass, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: labelSel("ns", "x")})),
		cnpIn("baseline", v1alpha2.BaselineTier, 100, labelSel("ns", "z"),
			inRule(deny, nil, v1alpha2.ClusterNetworkPolicyIngressPeer{Pods: &v1alpha2.NamespacedPod{PodSelector: *podIs("c")}})))
	got := Compile(c.input()).String()
	const path = "testdata/xyz.txt"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./netpol -run Golden -update):\n%s", path, got)
	}
}

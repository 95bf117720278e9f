package netpol

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Which pods are endpoints: those with an address, not hostNetwork, not
// terminated; a dual-stack pod is both its addresses.
func TestEndpoints(t *testing.T) {
	c := xyz()
	c.putNP(newNP("x", "from-b", podIs("a"), from(nil, podPeer(podIs("b")))))
	c.addPod("x", "dual", map[string]string{"pod": "b"})
	dual := c.pod("x/dual")
	dual.Status.PodIPs = append(dual.Status.PodIPs, corev1.PodIP{IP: "fd00::7"})
	c.addPod("x", "host", map[string]string{"pod": "b"})
	c.pod("x/host").Spec.HostNetwork = true
	c.addPod("x", "done", map[string]string{"pod": "b"})
	c.pod("x/done").Status.Phase = corev1.PodSucceeded
	c.addPod("x", "pending", map[string]string{"pod": "b"})
	c.pod("x/pending").Status.PodIP, c.pod("x/pending").Status.PodIPs = "", nil
	out := Compile(c.input())
	var peers []netip.Addr
	for _, s := range out.Sets {
		if s.Description == "in:x|pods:pod=b" {
			peers = s.Addresses
		}
	}
	want := []netip.Addr{c.ip("x/b"), c.ip("x/dual"), netip.MustParseAddr("fd00::7")}
	slices.SortFunc(want, netip.Addr.Compare)
	if !slices.Equal(peers, want) {
		t.Errorf("peer set %v, want %v:\n%s", peers, want, out)
	}
}

package kube

import (
	"net/netip"

	"github.com/romana/romana/netpol"
)

// Policies returns the policy compiler of Desire: package netpol with the
// controller's tenant and segment labels and prefix. podCIDRs are the
// pools pods take addresses from (romanad's networks): "every pod"
// compiles to them.
func Policies(cfg Config, podCIDRs []netip.Prefix) func(State) PolicySet {
	cfg = cfg.WithDefaults()
	nc := netpol.Config{TenantLabel: cfg.TenantLabel, SegmentLabel: cfg.SegmentLabel, Prefix: cfg.Prefix, PodCIDRs: podCIDRs}
	return func(st State) PolicySet {
		out := netpol.Compile(netpol.Input{Config: nc, Namespaces: st.Namespaces, Pods: st.Pods, Nodes: st.Nodes,
			NetworkPolicies: st.NetworkPolicies, ClusterNetworkPolicies: st.ClusterNetworkPolicies})
		return PolicySet{Policies: out.Policies, Sets: out.Sets, Problems: out.Problems}
	}
}

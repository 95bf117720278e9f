package cmdline

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/config"
	"github.com/romana/romana/kube"
)

// Kube holds romana-kube's flags.
type Kube struct {
	Kubeconfig     string
	Server, Config string
	TenantLabel    string
	SegmentLabel   string
	IsolationLabel string
	Topology       []string // LEVEL=NODELABEL
	NodeGrace      time.Duration
	MinInterval    time.Duration
	Resync         time.Duration
	LogLevel       string
}

// NewKube returns the romana-kube command; run is what it does with the
// flags.
func NewKube(run func(ctx context.Context, f *Kube) error) *cobra.Command {
	f := &Kube{}
	c := &cobra.Command{
		Use:   "romana-kube [flags]",
		Short: "Romana's Kubernetes controller: nodes, namespaces, pods and network policies into romanad",
		Long: `romana-kube follows a Kubernetes cluster with informers and keeps romanad in
step with it:

  Node                 → host (InternalIP; --topology places it in racks)
  Namespace            → tenant (by name, or by --tenant-label), open by default;
                         the label romana.io/isolation=tenant|segment opts it
                         into Romana's isolation
  Pod                  → pod record: the CNI plugin (netconf "kubernetes": true)
                         allocates the pod's address in its namespace's tenant
                         and the segment of its --segment-label label
  NetworkPolicy        → policies of the default tier, with address sets for
                         label selectors (docs/kubernetes.md)
  ClusterNetworkPolicy → policies of the admin and baseline tiers

It writes only its own objects: hosts labelled romana.io/source=kubernetes,
pod records, and policies and address sets whose names start with "k8s.".
It talks to romanad over mutual TLS as identity "kube", which may write
hosts, tenants, segments, pods, policies and address sets and nothing else
(romana cert issue --identity kube --out FILE). Run one replica.

Exit codes: 0 stopped by a signal; 1 failed (cannot reach the API server or
romanad); 2 the command line is wrong.`,
		Example: `  # in a cluster (in-cluster config), racks from the zone label
  romana-kube --config /etc/romana/kube.conf --topology rack=topology.kubernetes.io/zone

  # outside a cluster
  romana-kube --kubeconfig ~/.kube/config --config ./kube.conf

  # namespaces grouped into tenants by a label
  romana-kube --tenant-label example.com/tenant`,
	}
	fs := c.Flags()
	config.AddFlag(fs)
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig `file` (default: in-cluster configuration)")
	fs.StringVar(&f.Server, "server", "", "romanad: https://HOST:PORT, or unix:///PATH as root on romanad's machine (default: the credential's)")
	fs.StringVar(&f.Config, "config", "/etc/romana/kube.conf", "credential `file` of identity kube (romana cert issue --identity kube --out FILE)")
	fs.StringVar(&f.TenantLabel, "tenant-label", "", "namespace label naming the namespace's tenant (default: each namespace is a tenant, by name)")
	fs.StringVar(&f.SegmentLabel, "segment-label", kube.DefaultSegmentLabel, "pod label naming the pod's segment (pods without it: segment default)")
	fs.StringVar(&f.IsolationLabel, "isolation-label", kube.DefaultIsolationLabel, "namespace label opting its tenant into isolation: tenant or segment")
	fs.StringSliceVar(&f.Topology, "topology", nil, "`LEVEL=NODELABEL`: place nodes in the plan's LEVEL by that node label (repeatable)")
	fs.DurationVar(&f.NodeGrace, "node-grace", 5*time.Minute, "how long a deleted node's host keeps its addresses before they are released and the host removed")
	fs.DurationVar(&f.MinInterval, "min-sync-interval", 50*time.Millisecond, "least time between two syncs (changes meanwhile are written together)")
	fs.DurationVar(&f.Resync, "resync", 5*time.Minute, "re-read romanad's objects this often, repairing what others changed (0: never)")
	fs.StringVar(&f.LogLevel, "log-level", "info", "debug, info, warn or error")
	return newCommand(c, func(cmd *cobra.Command) error { return run(cmd.Context(), f) })
}

package cmdline

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/romana/romana/cni/forward"
	"github.com/romana/romana/cni/install"
)

// InstallCNI holds the flags of romana-agent install-cni.
type InstallCNI struct {
	Plugin, BinDir, ConfDir, ConfName, Socket string
	MTU                                       int
}

// NewInstallCNI returns romana-agent's install-cni subcommand; run is what
// it does with the flags.
func NewInstallCNI(run func(ctx context.Context, f *InstallCNI) error) *cobra.Command {
	f := &InstallCNI{}
	c := &cobra.Command{
		Use:   "install-cni [flags]",
		Short: "Install romana-cni and its network config on this node (the agent DaemonSet's init container)",
		Long: `Copies the romana-cni plugin into the node's CNI binary directory and writes
the network configuration list --conf-name into its CNI config directory:
romana-cni in Kubernetes mode ("kubernetes": true: the tenant and segment
come from the pod's record) forwarding to the agent's socket --socket.

Each file is written to a temporary file beside it and renamed into place,
so the container runtime never reads a partial one; files that already hold
the right contents are left alone, so running it again changes nothing. A
config file of the same name that does not use romana-cni is never
overwritten: install-cni fails and says so. Config files that sort before
--conf-name are reported: a container runtime uses the first one.

Exit codes: 0 installed (or already there); 1 failed; 2 the command line is
wrong.`,
		Example: `  # in the DaemonSet's init container, the node's directories mounted under /host
  romana-agent install-cni --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d`,
	}
	fs := c.Flags()
	fs.StringVar(&f.Plugin, "plugin", install.DefaultPluginSource, "the romana-cni binary to install (`file`)")
	fs.StringVar(&f.BinDir, "bin-dir", install.DefaultBinDir, "the node's CNI binary `directory`")
	fs.StringVar(&f.ConfDir, "conf-dir", install.DefaultConfDir, "the node's CNI config `directory`")
	fs.StringVar(&f.ConfName, "conf-name", install.DefaultConfName, "file `name` of the network config list in --conf-dir")
	fs.StringVar(&f.Socket, "socket", forward.DefaultSocket, "the agent's --cni-socket, as the node sees it (`path`)")
	fs.IntVar(&f.MTU, "mtu", 0, "MTU of the pods' interfaces (0: the agent's default)")
	return newCommand(c, func(cmd *cobra.Command) error { return run(cmd.Context(), f) })
}

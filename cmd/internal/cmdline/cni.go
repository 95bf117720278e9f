package cmdline

import (
	"github.com/spf13/cobra"
)

// CNICommandEnv is the environment variable a container runtime sets when it
// runs romana-cni as a CNI plugin; without it romana-cni is being run by
// hand and takes the command line of NewCNI.
const CNICommandEnv = "CNI_COMMAND"

// NewCNI returns romana-cni's command line for a person: --help and
// --version. Run with no arguments it calls about, which prints what the
// CNI library prints when CNI_COMMAND is missing.
func NewCNI(about func() error) *cobra.Command {
	c := &cobra.Command{
		Use:   "romana-cni",
		Short: "Romana's CNI plugin: attaches containers to the routed Romana network",
		Long: `romana-cni is a CNI plugin (spec 1.1.0, also 0.4.0 and 1.0.0): a container
runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION),
the other CNI_* variables and the network configuration on stdin. ADD gets
an endpoint address from romanad (named <containerID>:<ifname>) and wires the
container to its host with a veth pair: the address as a /32 inside, a host
route outside; DEL releases it. Run by hand without CNI_COMMAND, it takes
only --help and --version.

Network configuration keys besides the CNI ones ("cniVersion", "name",
"type": "romana-cni"):
  server      romanad: https://HOST:PORT (default: the credential's), or
              unix:///PATH as root on romanad's machine (env ROMANA_SERVER)
  credential  the plugin's credential file, identity cni:HOST, which the
              host's romana-agent writes and renews (default
              /etc/romana/cni.conf; unused with a unix:// server)
  host        this host's name at romanad (default: the credential's; with
              a unix:// server, the hostname)
  network     the romanad network to allocate from (default: romanad picks)
  tenant, segment
              defaults when the invocation names none
  mtu         MTU of the container's interface

The endpoint's tenant is the first set of: the configuration's
args.cni.romana.tenant, CNI_ARGS ROMANA_TENANT, CNI_ARGS K8S_POD_NAMESPACE,
the configuration's "tenant". Its segment: args.cni.romana.segment, CNI_ARGS
ROMANA_SEGMENT, the configuration's "segment", else "default".`,
		Example: `  # /etc/cni/net.d/10-romana.conf
  {"cniVersion": "1.1.0", "name": "romana", "type": "romana-cni", "tenant": "acme", "segment": "web"}

  # what a runtime does, by hand (root): attach namespace ns1 to tenant acme
  ip netns add ns1
  CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/run/netns/ns1 CNI_IFNAME=eth0 \
    CNI_PATH=/opt/cni/bin CNI_ARGS="ROMANA_TENANT=acme;ROMANA_SEGMENT=web" \
    romana-cni < /etc/cni/net.d/10-romana.conf

  romana-cni --version`,
	}
	return newCommand(c, func(*cobra.Command) error { return about() })
}

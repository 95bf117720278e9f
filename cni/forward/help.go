package forward

// The plugin's help, shared by the binary (which prints it without a
// command-line library) and the generated reference (cmd/gendocs).
const (
	Short = "Romana's CNI plugin: forwards CNI requests to the host's romana-agent"

	Long = `romana-cni is a CNI plugin (spec 1.1.0, also 0.4.0 and 1.0.0): a container
runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION),
the other CNI_* variables and the network configuration on stdin. It only
forwards the request over a unix socket to the host's romana-agent and prints
its answer; the agent gets an endpoint address from romanad (named
<containerID>:<ifname>) and wires the container to its host with a veth
pair: the address as a /32 inside, a host route outside; DEL releases it.
The plugin holds no credential: the agent acts with its own identity.

While the agent restarts (socket missing or refusing) the plugin retries
for up to 5 s, then fails with code 11 naming the socket (STATUS: code 50,
at once). A DEL while the agent is down succeeds when the attachment's host
veth does not exist (nothing was wired); otherwise it fails and the
runtime retries. Run by hand without CNI_COMMAND, it takes only --help and
--version.

Network configuration keys besides the CNI ones ("cniVersion", "name",
"type": "romana-cni"):
  agentSocket the agent's CNI socket (romana-agent --cni-socket; default
              /run/romana-agent/cni.sock)
  network     the romanad network to allocate from (default: romanad picks)
  tenant, segment
              defaults when the invocation names none
  mtu         MTU of the container's interface
Older keys ("server", "credential", "host") are ignored.

The endpoint's tenant is the first set of: the configuration's
args.cni.romana.tenant, CNI_ARGS ROMANA_TENANT, CNI_ARGS K8S_POD_NAMESPACE,
the configuration's "tenant". Its segment: args.cni.romana.segment, CNI_ARGS
ROMANA_SEGMENT, the configuration's "segment", else "default".`

	Example = `  # /etc/cni/net.d/10-romana.conf
  {"cniVersion": "1.1.0", "name": "romana", "type": "romana-cni", "tenant": "acme", "segment": "web"}

  # what a runtime does, by hand (root): attach namespace ns1 to tenant acme
  ip netns add ns1
  CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/run/netns/ns1 CNI_IFNAME=eth0 \
    CNI_PATH=/opt/cni/bin CNI_ARGS="ROMANA_TENANT=acme;ROMANA_SEGMENT=web" \
    romana-cni < /etc/cni/net.d/10-romana.conf

  romana-cni --version`
)

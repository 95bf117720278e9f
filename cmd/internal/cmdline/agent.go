package cmdline

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/bgp"
	"github.com/romana/romana/cni/forward"
	"github.com/romana/romana/config"
	"github.com/romana/romana/hoststate"
)

// Agent holds romana-agent's flags.
type Agent struct {
	Host, Server, Config, Join, CNIConfig string
	JoinFile                              string
	JoinWait                              time.Duration
	JoinKube                              string
	CNISocket                             string
	Mode                                  string
	Resync, MinSyncInterval               time.Duration
	MetricsListen                         string
	Cleanup                               bool
	Flowtable                             bool
	ChainProbeInterval                    time.Duration
	LogLevel                              string
	StatsInterval                         time.Duration
	BGP                                   BGP
}

// BGP holds romana-agent's --bgp* flags.
type BGP struct {
	Enabled         bool
	ASN             uint
	RouterID        string
	PasswordFile    string
	GracefulRestart time.Duration
	Accept          bool
	HoldTime        time.Duration
	ConnectRetry    time.Duration
	ListenPort      int
}

// Environment variables romana-agent reads when the flag is not given.
const (
	EnvServer    = "ROMANA_SERVER"
	EnvJoinToken = "ROMANA_JOIN_TOKEN"
)

// NewAgent returns the romana-agent command; run is what it does with the
// flags.
func NewAgent(run func(ctx context.Context, f *Agent) error) *cobra.Command {
	f := &Agent{}
	c := &cobra.Command{
		Use:   "romana-agent [flags]",
		Short: "Romana's host agent: keeps this host's routes and policies equal to romanad's state",
		Long: `The agent follows romanad (a snapshot, then a watch stream) and keeps this
host's routes, tenant isolation and policies (nftables), service-chain
steering and optional BGP sessions equal to the desired state.

It talks to romanad over mutual TLS as identity host:NAME. The first start
joins with a single-use token that "romana host add NAME --ip IP" (or
"romana host token NAME") prints; the agent then keeps its credential in
--config and renews it before it expires. As root on romanad's own machine
it may instead use romanad's unix socket (--server unix:///PATH).

It serves the romana-cni plugin on --cni-socket (root only): the plugin
forwards each CNI request there and the agent allocates with its own
identity, creates the veth and routes. It also keeps a CNI credential
(identity cni:NAME) in --cni-config for plugins that talk to romanad
themselves; romana-cni holds none.

Stopping the agent (SIGINT, SIGTERM) leaves the host's state in place;
--cleanup removes it.

Exit codes: 0 stopped by a signal, or --cleanup done; 1 failed (cannot join
or reach romanad, netlink or nftables refused); 2 the command line is wrong.`,
		Example: `  # first start on host h3: join, then run
  romana-agent --join rmn1.0123abcd.... --server https://romanad.example:9600 --host h3

  # later starts: the credential in --config says who and where
  romana-agent

  # the token from the environment, not the command line
  ROMANA_JOIN_TOKEN=rmn1.... romana-agent --server https://10.0.0.5:9600

  # a routed fabric: announce this host's blocks to its top-of-rack devices
  romana-agent --mode fabric --bgp

  # remove everything the agent put on this host
  romana-agent --cleanup`,
	}
	fs := c.Flags()
	config.AddFlag(fs) // --config-file: YAML of flag names and values; flags given win
	fs.StringVar(&f.Host, "host", "", "this host's name at romanad (default: the credential's, else the hostname)")
	fs.StringVar(&f.Server, "server", "", "romanad: https://HOST:PORT, or unix:///PATH as root on romanad's machine (env "+EnvServer+"; default: the credential's)")
	fs.StringVar(&f.Config, "config", "/var/lib/romana/agent/host.conf", "the agent's credential `file` (written by --join, renewed in place)")
	fs.StringVar(&f.Join, "join", "", "single-use join `token` for the first start (env "+EnvJoinToken+"); ignored once --config exists")
	fs.StringVar(&f.JoinFile, "join-file", "", "`file` holding the join token, used when neither --join nor "+EnvJoinToken+" gives one; a missing file is no token (a Kubernetes Secret with a key per node)")
	fs.DurationVar(&f.JoinWait, "join-wait", 10*time.Minute, "with --join-file and no credential in --config yet, how long to wait for the file to hold a token (read each second; a Kubernetes Secret's key appears once the bootstrap Job wrote it and the kubelet updated the volume); then fail (0: do not wait)")
	fs.StringVar(&f.JoinKube, "join-kube", "", "while waiting for --join-file, also read the token through the Kubernetes API server, with the pod's ServiceAccount, from the key named --host of the Secret `NAMESPACE/NAME` (a Secret volume shows a new key only at the kubelet's next sync of the pod, a minute and more later)")
	fs.StringVar(&f.CNIConfig, "cni-config", "/etc/romana/cni.conf", "`file` to keep a CNI credential (cni:HOST) in, for plugins that talk to romanad themselves; romana-cni needs none (\"\" disables)")
	fs.StringVar(&f.CNISocket, "cni-socket", forward.DefaultSocket, "unix socket `path` where the agent serves the romana-cni plugin's requests, root-only (\"\" disables); the network config's \"agentSocket\" must name it")
	fs.StringVar(&f.Mode, "mode", string(hoststate.ModeFlat), "flat: route other hosts' CIDRs via their IPs (one L2 segment); fabric: the fabric routes them")
	fs.DurationVar(&f.Resync, "resync", 10*time.Second, "full reconciliation interval (repairs drift)")
	fs.DurationVar(&f.MinSyncInterval, "min-sync-interval", 10*time.Millisecond, "least time between two applications of changes after a burst of 10 (changes arriving meanwhile are applied together); negative: no limit")
	fs.StringVar(&f.MetricsListen, "metrics-listen", "127.0.0.1:9601", `address for /metrics and /healthz ("" disables)`)
	fs.BoolVar(&f.Cleanup, "cleanup", false, "remove everything the agent owns on this host (table inet romana, routes with protocol 190, BGP-learned routes with protocol 191, the gateway link, chain steering: table inet romana-chain, its ip rules and route tables; with --bgp also what the BGP peers still hold) and exit")
	fs.BoolVar(&f.Flowtable, "flowtable", false, "offload established connections of local endpoints to an nftables software flowtable (fast path; experimental, not proven faster: see docs/agent.md); without kernel support the agent runs without it and reports a problem")
	fs.DurationVar(&f.ChainProbeInterval, "chain-probe-interval", time.Second, "health-check period of local service functions (down after 2 failed probes)")
	fs.StringVar(&f.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&f.StatsInterval, "stats-interval", 5*time.Second, "how often to report policy rule counters to romanad (0 disables)")

	b := &f.BGP
	fs.BoolVar(&b.Enabled, "bgp", false, "announce this host's blocks over BGP to the top-of-rack devices serving it (romana device); use with --mode fabric")
	fs.UintVar(&b.ASN, "bgp-asn", bgp.DefaultASN, "this host's BGP AS number")
	fs.StringVar(&b.RouterID, "bgp-router-id", "", "BGP router id (default: the host's IPv4 underlay address)")
	fs.StringVar(&b.PasswordFile, "bgp-password-file", "", "file holding the TCP MD5 password of the BGP sessions")
	fs.DurationVar(&b.GracefulRestart, "bgp-graceful-restart", 0, "advertise graceful restart with this restart time (e.g. 120s): peers keep the host's routes while the agent restarts; a stop then leaves them to expire (use --cleanup to withdraw)")
	fs.BoolVar(&b.Accept, "bgp-accept", false, "install routes the peers offer inside the networks' pools (ECMP over several peers), tagged proto 191")
	fs.DurationVar(&b.HoldTime, "bgp-hold-time", bgp.DefaultHoldTime, "BGP hold time")
	fs.DurationVar(&b.ConnectRetry, "bgp-connect-retry", bgp.DefaultConnectRetry, "delay between connection attempts to a peer")
	fs.IntVar(&b.ListenPort, "bgp-listen-port", 0, "also accept sessions peers open on this port (0: only connect out to port 179)")

	return newCommand(c, func(cmd *cobra.Command) error {
		// The environment stands in for a flag not given (read here, not
		// as the flag's default, so that help never shows a token).
		if !cmd.Flags().Changed("server") {
			f.Server = os.Getenv(EnvServer)
		}
		if !cmd.Flags().Changed("join") {
			f.Join = os.Getenv(EnvJoinToken)
		}
		if f.Join == "" && f.JoinFile != "" {
			b, err := os.ReadFile(f.JoinFile)
			if err != nil && !errors.Is(err, iofs.ErrNotExist) {
				return fmt.Errorf("--join-file: %w", err)
			}
			f.Join = strings.TrimSpace(string(b))
		}
		return run(cmd.Context(), f)
	})
}

package cmdline

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/bootstrap"
)

// KubeBootstrap holds the flags of romana-kube bootstrap.
type KubeBootstrap struct {
	Kubeconfig, Romanad, Server       string
	Namespace, KubeSecret, JoinSecret string
	TokenTTL                          string
	Wait                              time.Duration
}

// NewKubeBootstrap returns romana-kube's bootstrap subcommand; run is what
// it does with the flags.
func NewKubeBootstrap(run func(ctx context.Context, f *KubeBootstrap) error) *cobra.Command {
	f := &KubeBootstrap{}
	c := &cobra.Command{
		Use:   "bootstrap [flags]",
		Short: "Put romana-kube's credential and the nodes' join tokens into Secrets (the bootstrap Job)",
		Long: `Acts as romanad's admin through its unix socket (on romanad's node) and
writes two Secrets in --namespace:

  --kube-secret  key kube.conf: a credential of identity kube for romana-kube
                 (a new key; romanad signs its certificate), made once
  --join-secret  a key per node name: a single-use join token for the node's
                 agent (romana-agent --join-file), made for each node that has
                 no key yet and whose Romana host exists

romana-kube makes a host for each node; until it has, the node waits. The
command tries again each second (romanad's socket or the API server not
answering yet, nodes without a host), writing each node's token as soon as
its host exists, for up to --wait; it is safe to repeat. Delete a node's
key to give it a new token (a node reinstalled, or a token that expired
unused).

Exit codes: 0 every node has a token; 1 failed, or nodes still wait after
--wait; 2 the command line is wrong.`,
		Example: `  # the bootstrap Job of deploy/kubernetes
  romana-kube bootstrap --romanad unix:///run/romana/romanad.sock \
    --server https://10.96.0.20:9600`,
	}
	fs := c.Flags()
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig `file` (default: in-cluster configuration)")
	fs.StringVar(&f.Romanad, "romanad", "unix:///run/romana/romanad.sock", "romanad's unix socket (`unix:///PATH`), where this is admin")
	fs.StringVar(&f.Server, "server", "", "romanad's `URL` (https://HOST:PORT) to write into the kube credential (required)")
	fs.StringVar(&f.Namespace, "namespace", bootstrap.DefaultNamespace, "`namespace` of the Secrets")
	fs.StringVar(&f.KubeSecret, "kube-secret", bootstrap.DefaultKubeSecret, "Secret `name` of romana-kube's credential")
	fs.StringVar(&f.JoinSecret, "join-secret", bootstrap.DefaultJoinSecret, "Secret `name` of the join tokens")
	fs.StringVar(&f.TokenTTL, "token-ttl", "", "how long a join token may be used (default romanad's, 1h)")
	fs.DurationVar(&f.Wait, "wait", 10*time.Minute, "how long to keep trying until every node has a token (0: one pass)")
	return newCommand(c, func(cmd *cobra.Command) error { return run(cmd.Context(), f) })
}

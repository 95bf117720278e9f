package cli

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func init() { register(newPodCmd) }

func newPodCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "pod",
		Aliases: []string{"pods"},
		Short:   "Show the Kubernetes pod records romanad allocates pods' addresses by",
		Long: `A pod record says which tenant and segment a Kubernetes pod's addresses come
from. The Kubernetes controller (romana-kube) writes one for each pod; when
the CNI plugin asks for an address for a pod (netconf "kubernetes": true),
romanad takes the tenant and segment from the record, waiting a few seconds
for it if the pod is newer than the record. Agents never see pod records.`,
	}
	cmd.AddCommand(newPodListCmd(g), newPodShowCmd(g))
	return cmd
}

func newPodListCmd(g *Globals) *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List pod records, of one namespace or all",
		Example: `  romana pod list
  romana pod list --namespace shop -o yaml`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ps, err := c.ListPods(ctx, ns)
			if err != nil {
				return err
			}
			return g.EmitList(cmd, ps, len(ps), "no pod records", func(w io.Writer) { writePods(w, ps) })
		}),
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace's pods")
	return cmd
}

func newPodShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAMESPACE/NAME",
		Short:   "Show a pod record",
		Example: `  romana pod show shop/web-0`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ns, name, err := api.ParsePodKey(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			p, err := c.GetPod(ctx, ns, name)
			if err != nil {
				return err
			}
			return g.Emit(cmd, p, func(w io.Writer) { writePods(w, []api.Pod{p}) })
		}),
	}
}

func writePods(w io.Writer, ps []api.Pod) {
	row(w, "NAMESPACE", "NAME", "TENANT", "SEGMENT", "UID")
	for _, p := range ps {
		row(w, p.Namespace, p.Name, p.Tenant, p.Segment, p.UID)
	}
}

package cli

import (
	"context"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func newTenantCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "tenant",
		Aliases: []string{"tenants"},
		Short:   "Manage tenants: isolation domains",
		Long: `A tenant is an isolation domain; romanad gives it the smallest free id, which
becomes the tenant bits of its addresses. Isolation says who may connect to
the tenant's endpoints when no policy says otherwise:
  tenant   only the tenant's own endpoints (default)
  segment  only endpoints of the same segment
  none     anyone`,
	}
	cmd.AddCommand(newTenantAddCmd(g), newTenantListCmd(g), newTenantShowCmd(g), newTenantRemoveCmd(g))
	return cmd
}

func newTenantAddCmd(g *Globals) *cobra.Command {
	var isolation string
	cmd := &cobra.Command{
		Use:   "add NAME [--isolation tenant|segment|none]",
		Short: "Add a tenant",
		Example: `  romana tenant add acme
  romana tenant add shared --isolation none`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch isolation {
			case "", api.IsolationTenant, api.IsolationSegment, api.IsolationNone:
			default:
				return usagef("--isolation %q: use tenant, segment or none", isolation)
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			t, err := c.AddTenant(ctx, api.Tenant{Name: args[0], Isolation: isolation})
			if err != nil {
				return err
			}
			return g.Emit(cmd, t, func(w io.Writer) { writeTenants(w, []api.Tenant{t}) })
		},
	}
	cmd.Flags().StringVar(&isolation, "isolation", "", "tenant (default), segment or none")
	return cmd
}

func newTenantListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tenants",
		Example: `  romana tenant list`,
		Args:    cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ts, err := c.ListTenants(ctx)
			if err != nil {
				return err
			}
			ts = append([]api.Tenant{}, ts...)
			slices.SortFunc(ts, func(a, b api.Tenant) int { return strings.Compare(a.Name, b.Name) })
			return g.EmitList(cmd, ts, len(ts), "no tenants", func(w io.Writer) { writeTenants(w, ts) })
		}),
	}
}

func newTenantShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a tenant",
		Example: `  romana tenant show acme -o json`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			t, err := c.GetTenant(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, t, func(w io.Writer) {
				row(w, "Name:", t.Name)
				row(w, "ID:", t.ID)
				row(w, "Isolation:", isolationOf(t))
			})
		}),
	}
}

func newTenantRemoveCmd(g *Globals) *cobra.Command {
	return removeCmd(g, "tenant", "Remove a tenant", `  romana tenant remove acme`, (*client.Client).RemoveTenant)
}

func isolationOf(t api.Tenant) string {
	if t.Isolation == "" {
		return api.IsolationTenant
	}
	return t.Isolation
}

func writeTenants(w io.Writer, ts []api.Tenant) {
	row(w, "NAME", "ID", "ISOLATION")
	for _, t := range ts {
		row(w, t.Name, t.ID, isolationOf(t))
	}
}

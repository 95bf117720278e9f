package cli

import (
	"cmp"
	"context"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func newSegmentCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "segment",
		Aliases: []string{"segments", "seg"},
		Short:   "Manage segments: parts of a tenant (microservice boundaries)",
		Long: `A segment belongs to one tenant; romanad gives it the smallest free id within
the tenant, which becomes the segment bits of its addresses.`,
	}
	cmd.AddCommand(newSegmentAddCmd(g), newSegmentListCmd(g), newSegmentShowCmd(g), newSegmentRemoveCmd(g))
	return cmd
}

func newSegmentAddCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "add TENANT NAME",
		Short:   "Add a segment to a tenant",
		Example: `  romana segment add acme web`,
		Args:    cobra.ExactArgs(2),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			s, err := c.AddSegment(ctx, api.Segment{Tenant: args[0], Name: args[1]})
			if err != nil {
				return err
			}
			return g.Emit(cmd, s, func(w io.Writer) { writeSegments(w, []api.Segment{s}) })
		}),
	}
}

func newSegmentListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list [TENANT]",
		Aliases: []string{"ls"},
		Short:   "List the segments of one tenant, or of all",
		Example: `  romana segment list
  romana segment list acme`,
		Args: cobra.MaximumNArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			tenant := ""
			if len(args) == 1 {
				tenant = args[0]
			}
			ss, err := c.ListSegments(ctx, tenant)
			if err != nil {
				return err
			}
			ss = append([]api.Segment{}, ss...)
			slices.SortFunc(ss, func(a, b api.Segment) int {
				return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Name, b.Name))
			})
			none := "no segments"
			if tenant != "" {
				none = "tenant " + tenant + " has no segments"
			}
			return g.EmitList(cmd, ss, len(ss), none, func(w io.Writer) { writeSegments(w, ss) })
		}),
	}
}

func newSegmentShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show TENANT NAME",
		Short:   "Show a segment",
		Example: `  romana segment show acme web`,
		Args:    cobra.ExactArgs(2),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			s, err := c.GetSegment(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return g.Emit(cmd, s, func(w io.Writer) {
				row(w, "Tenant:", s.Tenant)
				row(w, "Name:", s.Name)
				row(w, "ID:", s.ID)
			})
		}),
	}
}

func newSegmentRemoveCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "remove TENANT NAME",
		Aliases: []string{"rm", "delete"},
		Short:   "Remove a segment",
		Example: `  romana segment remove acme web`,
		Args:    cobra.ExactArgs(2),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if err := c.RemoveSegment(ctx, args[0], args[1]); err != nil {
				return err
			}
			g.Say(cmd, "segment %s/%s removed", args[0], args[1])
			return nil
		}),
	}
}

func writeSegments(w io.Writer, ss []api.Segment) {
	row(w, "TENANT", "NAME", "ID")
	for _, s := range ss {
		row(w, s.Tenant, s.Name, s.ID)
	}
}

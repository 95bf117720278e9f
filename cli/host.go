package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func newHostCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "host",
		Aliases: []string{"hosts"},
		Short:   "Manage hosts: the machines that run endpoints",
		Long: `A host has an underlay IP (the next hop other hosts use for its CIDRs) and
labels. In a network with topology levels, a host is placed by the label named
like each level (e.g. rack=r1 for a "rack" level). romanad gives every host a
block (CIDR) in every network.`,
	}
	cmd.AddCommand(newHostAddCmd(g), newHostListCmd(g), newHostShowCmd(g), newHostRemoveCmd(g))
	return cmd
}

func newHostAddCmd(g *Globals) *cobra.Command {
	var (
		ip     string
		labels map[string]string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --ip IP [--label KEY=VALUE]...",
		Short: "Add a host",
		Example: `  romana host add h1 --ip 192.168.1.11
  romana host add h2 --ip 192.168.2.12 --label rack=r2 --label zone=a`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ip == "" {
				return usagef("need --ip, the host's underlay address")
			}
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return usagef("--ip %q: %v", ip, err)
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			h, err := c.AddHost(ctx, api.Host{Name: args[0], IP: addr, Labels: labels})
			if err != nil {
				return err
			}
			return g.Emit(cmd, h, func(w io.Writer) { writeHosts(w, []api.Host{h}) })
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "the host's underlay IP address")
	cmd.Flags().StringToStringVar(&labels, "label", nil, "label KEY=VALUE (repeatable); a topology level matches the label of its name")
	return cmd
}

func newHostListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List hosts with their blocks",
		Example: `  romana host list`,
		Args:    cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			hs, err := c.ListHosts(ctx)
			if err != nil {
				return err
			}
			hs = sortHosts(hs)
			return g.Emit(cmd, hs, func(w io.Writer) { writeHosts(w, hs) })
		}),
	}
}

func newHostShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a host, its labels and its block in each network",
		Example: `  romana host show h1 -o yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			h, err := c.GetHost(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, h, func(w io.Writer) { writeHost(w, h) })
		}),
	}
}

func newHostRemoveCmd(g *Globals) *cobra.Command {
	return removeCmd(g, "host", "Remove a host", `  romana host remove h1`, (*client.Client).RemoveHost)
}

func sortHosts(hs []api.Host) []api.Host {
	hs = append([]api.Host{}, hs...)
	slices.SortFunc(hs, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) })
	return hs
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func sortedSlots(s []api.HostSlot) []api.HostSlot {
	s = append([]api.HostSlot{}, s...)
	slices.SortFunc(s, func(a, b api.HostSlot) int { return strings.Compare(a.Network, b.Network) })
	return s
}

func writeHosts(w io.Writer, hs []api.Host) {
	row(w, "NAME", "IP", "LABELS", "BLOCKS")
	for _, h := range hs {
		var blocks []string
		for _, s := range sortedSlots(h.Slots) {
			blocks = append(blocks, fmt.Sprintf("%s:%s", s.Network, s.CIDR))
		}
		row(w, h.Name, h.IP, labelString(h.Labels), strings.Join(blocks, ","))
	}
}

func writeHost(w io.Writer, h api.Host) {
	row(w, "Name:", h.Name)
	row(w, "IP:", h.IP)
	row(w, "Labels:", labelString(h.Labels))
	fmt.Fprintln(w)
	row(w, "NETWORK", "LOCATION", "BLOCK")
	for _, s := range sortedSlots(h.Slots) {
		row(w, s.Network, s.Loc, s.CIDR)
	}
}

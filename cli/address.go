package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func newAddressCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "address",
		Aliases: []string{"addresses", "addr"},
		Short:   "Allocate, release, list and decode endpoint addresses",
		Long: `An address is allocated for a name (the idempotency key: the same name gets
the same address until it is released) on a host, for a tenant's segment. Its
bits say where it lives: "romana address decode" takes any address apart.`,
	}
	cmd.AddCommand(newAddressAllocateCmd(g), newAddressReleaseCmd(g), newAddressListCmd(g),
		newAddressShowCmd(g), newAddressDecodeCmd(g))
	return cmd
}

func newAddressAllocateCmd(g *Globals) *cobra.Command {
	var (
		req   api.AddressRequest
		attrs map[string]string
	)
	cmd := &cobra.Command{
		Use:   "allocate NAME --host HOST --tenant TENANT --segment SEGMENT [--network NETWORK]",
		Short: "Allocate an address (or return the one NAME already has)",
		Long: `Allocate an address for NAME on HOST in TENANT's SEGMENT. --network may be
left out when exactly one network accepts the tenant. Allocating a NAME that
already has an address returns that address.`,
		Example: `  romana address allocate web-1 --host h1 --tenant acme --segment web
  romana address allocate db-1 --host h2 --tenant acme --segment db --network main -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			req.Attrs = attrs
			for flag, v := range map[string]string{"--host": req.Host, "--tenant": req.Tenant, "--segment": req.Segment} {
				if v == "" {
					return usagef("need %s (all of --host, --tenant and --segment)", flag)
				}
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			a, err := c.Allocate(ctx, req)
			if err != nil {
				return err
			}
			return g.Emit(cmd, a, func(w io.Writer) { writeAddresses(w, []api.Address{a}) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Host, "host", "", "host the endpoint runs on")
	f.StringVar(&req.Tenant, "tenant", "", "tenant of the endpoint")
	f.StringVar(&req.Segment, "segment", "", "segment of the tenant")
	f.StringVar(&req.Network, "network", "", "network to allocate from (default: the only one that accepts the tenant)")
	f.StringVar(&req.Interface, "interface", "", "host-side interface of the endpoint (set by the CNI plugin)")
	f.StringToStringVar(&attrs, "attr", nil, "attribute KEY=VALUE to store with the address (repeatable)")
	return cmd
}

func newAddressReleaseCmd(g *Globals) *cobra.Command {
	var ip string
	cmd := &cobra.Command{
		Use:   "release NAME | --ip IP",
		Short: "Release an address by name or by IP",
		Long: `Release an address. Releasing one that is not allocated succeeds (exit 0)
and says so: "address NAME is not allocated; nothing released".`,
		Example: `  romana address release web-1
  romana address release --ip 10.1.1.17`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (ip != "") {
				return usagef("give either NAME or --ip IP")
			}
			var addr netip.Addr
			if ip != "" {
				var err error
				if addr, err = parseAddrFlag("--ip", ip); err != nil {
					return err
				}
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			// Look first, so that the message is true: releasing a free
			// address succeeds (idempotence, e.g. for CNI DEL) but changes
			// nothing.
			if ip != "" {
				d, err := c.Decode(ctx, addr)
				switch {
				case api.IsNotFound(err):
					g.Say(cmd, "address %s is not allocated (it is in no network); nothing released", addr)
					return nil
				case err != nil:
					return err
				case d.Allocation == "":
					g.Say(cmd, "address %s is not allocated; nothing released", addr)
					return nil
				}
				if err := c.ReleaseIP(ctx, addr); err != nil {
					return err
				}
				g.Say(cmd, "address %s (%s) released", addr, d.Allocation)
				return nil
			}
			a, err := c.GetAddress(ctx, args[0])
			if api.IsNotFound(err) {
				g.Say(cmd, "address %s is not allocated; nothing released", args[0])
				return nil
			}
			if err != nil {
				return err
			}
			if err := c.Release(ctx, args[0]); err != nil {
				return err
			}
			g.Say(cmd, "address %s (%s) released", args[0], a.IP)
			return nil
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "release the address with this IP")
	return cmd
}

func newAddressListCmd(g *Globals) *cobra.Command {
	var f api.AddressFilter
	cmd := &cobra.Command{
		Use:     "list [--network N] [--host H] [--tenant T] [--segment S]",
		Aliases: []string{"ls"},
		Short:   "List allocated addresses, sorted by IP",
		Example: `  romana address list
  romana address list --host h1 --tenant acme`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			as, err := c.ListAddresses(ctx, f)
			if err != nil {
				return err
			}
			as = sortAddresses(as)
			none := "no addresses allocated"
			if filtered := filterFlags(cmd); filtered != "" {
				none = "no addresses match " + filtered
			}
			return g.EmitList(cmd, as, len(as), none, func(w io.Writer) { writeAddresses(w, as) })
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Network, "network", "", "only this network")
	fl.StringVar(&f.Host, "host", "", "only this host")
	fl.StringVar(&f.Tenant, "tenant", "", "only this tenant")
	fl.StringVar(&f.Segment, "segment", "", "only this segment")
	return cmd
}

func newAddressShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show an allocated address",
		Example: `  romana address show web-1`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			a, err := c.GetAddress(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, a, func(w io.Writer) { writeAddresses(w, []api.Address{a}) })
		}),
	}
}

func newAddressDecodeCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "decode IP",
		Short: "Take an address apart into network, host, tenant, segment and endpoint",
		Example: `  romana address decode 10.1.1.27
  romana address decode 10.1.1.27 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := parseAddrFlag("", args[0])
			if err != nil {
				return err
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			d, err := c.Decode(ctx, ip)
			if err != nil {
				return err
			}
			return g.Emit(cmd, d, func(w io.Writer) { writeDecoded(w, d) })
		},
	}
}

// filterFlags is the command's flags that were set, as typed ("--host h1").
func filterFlags(cmd *cobra.Command) string {
	var parts []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if cmd.LocalFlags().Lookup(f.Name) != nil {
			parts = append(parts, "--"+f.Name+" "+f.Value.String())
		}
	})
	return strings.Join(parts, " ")
}

func sortAddresses(as []api.Address) []api.Address {
	as = append([]api.Address{}, as...)
	slices.SortFunc(as, func(a, b api.Address) int {
		return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Name, b.Name))
	})
	return as
}

func writeAddresses(w io.Writer, as []api.Address) {
	row(w, "NAME", "IP", "NETWORK", "HOST", "TENANT", "SEGMENT")
	for _, a := range as {
		row(w, a.Name, a.IP, a.Network, a.Host, a.Tenant, a.Segment)
	}
}

// named prints "name (id 3)", or "id 3 (no such object)" when unnamed.
func named(name string, id uint64) string {
	if name == "" {
		return fmt.Sprintf("id %d (none by that id)", id)
	}
	return fmt.Sprintf("%s (id %d)", name, id)
}

func writeDecoded(w io.Writer, d api.DecodedAddress) {
	row(w, "IP:", d.IP)
	row(w, "Network:", d.Network)
	host := fmt.Sprintf("location %s (no host there)", d.Loc)
	if d.Host != "" {
		host = fmt.Sprintf("%s (location %s)", d.Host, d.Loc)
	}
	row(w, "Host:", host)
	row(w, "Tenant:", named(d.Tenant, d.TenantID))
	row(w, "Segment:", named(d.Segment, d.SegmentID))
	row(w, "Endpoint:", d.Endpoint)
	row(w, "Allocated to:", orDash(d.Allocation))
}

package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/fabric"
	"github.com/romana/romana/plan"
)

func init() { register(newDeviceCmd) }

func newDeviceCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "device",
		Aliases: []string{"devices"},
		Short:   "Manage fabric devices: the top-of-rack and spine routers of a routed fabric",
		Long: `A device is a router of the physical fabric. A top-of-rack ("tor") serves
the hosts whose labels match its group (e.g. rack=r1) and reaches them on its
host links (its address on the hosts' subnet); a spine reaches top-of-rack
routers over device links. From devices, hosts and the address plan, romanad
computes each device's static routes ("romana fabric routes") and tells each
host's agent which top-of-rack routers to peer with over BGP. See docs/fabric.md.`,
	}
	cmd.AddCommand(newDeviceAddCmd(g), newDeviceListCmd(g), newDeviceShowCmd(g), newDeviceRemoveCmd(g))
	return cmd
}

// parseLink parses PEER=LOCAL[,REMOTE], e.g. spine1=172.16.0.1/31,172.16.0.0.
func parseLink(s string) (api.DeviceLink, error) {
	peer, rest, ok := strings.Cut(s, "=")
	if !ok || peer == "" {
		return api.DeviceLink{}, fmt.Errorf("--link %q: want PEER=LOCAL/LEN[,REMOTE], e.g. spine1=172.16.0.1/31,172.16.0.0", s)
	}
	local, remote, _ := strings.Cut(rest, ",")
	l := api.DeviceLink{Peer: peer}
	var err error
	if l.Local, err = plan.ParsePrefix(local); err != nil {
		return api.DeviceLink{}, fmt.Errorf("--link %q: local address %q: %v", s, local, err)
	}
	if remote != "" {
		if l.Remote, err = netip.ParseAddr(remote); err != nil {
			return api.DeviceLink{}, fmt.Errorf("--link %q: remote %q is not an IP address (%s)", s, remote, plan.AddrReason(err))
		}
	}
	return l, nil
}

func newDeviceAddCmd(g *Globals) *cobra.Command {
	var (
		kind, routerID, file string
		group                map[string]string
		asn                  uint32
		hostLinks, links     []string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --kind tor|spine [flags] | add -f FILE",
		Short: "Add a device, or replace the device of that name",
		Example: `  romana device add spine1 --kind spine --asn 65100 --router-id 172.31.255.100
  romana device add tor1 --kind tor --group rack=r1 --asn 65101 --router-id 172.31.255.1 \
      --host-link 192.168.1.1/24 --link spine1=172.16.0.1/31,172.16.0.0
  romana device list -o yaml > devices.yaml && romana device add -f devices.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var devs []api.Device
			var data []byte
			switch {
			case file != "" && len(args) > 0:
				return usagef("give either NAME with flags or -f FILE, not both")
			case file != "":
				var err error
				if data, err = readInput(cmd, file); err != nil {
					return err
				}
				if isList(data) {
					err = decodeStrict(file, data, &devs)
				} else {
					var d api.Device
					err = decodeStrict(file, data, &d)
					devs = []api.Device{d}
				}
				if err != nil {
					return err
				}
			case len(args) == 1:
				switch kind {
				case api.DeviceToR, api.DeviceSpine:
				case "":
					return usagef("need --kind tor or --kind spine")
				default:
					return usagef("--kind %q: use tor (a top-of-rack router, a leaf) or spine", kind)
				}
				d := api.Device{Name: args[0], Kind: kind, Group: group, ASN: asn}
				if routerID != "" {
					a, err := parseAddrFlag("--router-id", routerID)
					if err != nil {
						return err
					}
					d.RouterID = a
				}
				for _, h := range hostLinks {
					p, err := plan.ParsePrefix(h)
					if err != nil {
						return usagef("--host-link %q: want this device's address with the subnet's length, e.g. 192.168.1.1/24: %v", h, err)
					}
					d.Links = append(d.Links, api.DeviceLink{Local: p})
				}
				for _, s := range links {
					l, err := parseLink(s)
					if err != nil {
						return usagef("%v", err)
					}
					d.Links = append(d.Links, l)
				}
				devs = []api.Device{d}
			default:
				return usagef("need NAME (with --kind ...) or -f FILE")
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			var out []api.Device
			for _, d := range devs {
				saved, err := c.PutDevice(ctx, d)
				if err != nil && len(devs) > 1 {
					return fmt.Errorf("device %s (%d of %d; the ones before it were saved): %w", d.Name, len(out)+1, len(devs), err)
				}
				if err != nil {
					return err
				}
				out = append(out, saved)
			}
			var v any = out
			if len(out) == 1 && !isList(data) {
				v = out[0]
			}
			return g.Emit(cmd, v, func(w io.Writer) { writeDevices(w, out) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&kind, "kind", "", "tor (top-of-rack) or spine")
	f.StringToStringVar(&group, "group", nil, "the host labels a top-of-rack serves, KEY=VALUE (repeatable), e.g. rack=r1")
	f.Uint32Var(&asn, "asn", 0, "BGP autonomous system number (0: no BGP)")
	f.StringVar(&routerID, "router-id", "", "loopback address, the BGP router id")
	f.StringArrayVar(&hostLinks, "host-link", nil, "a top-of-rack's address on a subnet of its hosts, ADDR/LEN (repeatable)")
	f.StringArrayVar(&links, "link", nil, "link to another device, PEER=LOCAL/LEN[,REMOTE] (repeatable); REMOTE is the peer's end, the next hop")
	f.StringVarP(&file, "file", "f", "", "device file, JSON or YAML, one device or a list (- for stdin)")
	return cmd
}

func newDeviceListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List devices",
		Example: `  romana device list`,
		Args:    cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ds, err := c.ListDevices(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(ds, func(a, b api.Device) int { return strings.Compare(a.Name, b.Name) })
			return g.EmitList(cmd, ds, len(ds), "no devices", func(w io.Writer) { writeDevices(w, ds) })
		}),
	}
}

func newDeviceShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a device and its links",
		Example: `  romana device show tor1 -o yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			d, err := c.GetDevice(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, d, func(w io.Writer) { writeDevice(w, d) })
		}),
	}
}

func newDeviceRemoveCmd(g *Globals) *cobra.Command {
	return removeCmd(g, "device", "Remove a device", `  romana device remove tor1`, (*client.Client).RemoveDevice)
}

func asnString(n uint32) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(n), 10)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func linkString(l api.DeviceLink) string {
	if l.Peer == "" {
		return "hosts@" + l.Local.String()
	}
	s := l.Peer + "@" + l.Local.String()
	if l.Remote.IsValid() {
		s += ">" + l.Remote.String()
	}
	return s
}

func writeDevices(w io.Writer, ds []api.Device) {
	row(w, "NAME", "KIND", "GROUP", "ASN", "ROUTER-ID", "LINKS")
	for _, d := range ds {
		var links []string
		for _, l := range d.Links {
			links = append(links, linkString(l))
		}
		row(w, d.Name, d.Kind, fabric.GroupString(d.Group), asnString(d.ASN), addrString(d.RouterID), strings.Join(links, ","))
	}
}

func writeDevice(w io.Writer, d api.Device) {
	row(w, "Name:", d.Name)
	row(w, "Kind:", d.Kind)
	row(w, "Group:", fabric.GroupString(d.Group))
	row(w, "ASN:", asnString(d.ASN))
	row(w, "Router ID:", addrString(d.RouterID))
	fmt.Fprintln(w)
	row(w, "PEER", "LOCAL", "REMOTE")
	for _, l := range d.Links {
		peer := l.Peer
		if peer == "" {
			peer = "(hosts)"
		}
		row(w, peer, l.Local, addrString(l.Remote))
	}
}

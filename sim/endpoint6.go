package sim

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Gateway6 is the IPv6 default gateway of a simulated endpoint: a
// link-local address its host must answer on the veth (for the tests that
// build the host side by hand, an address fe80::1/64 on HostIface).
var Gateway6 = netip.MustParseAddr("fe80::1")

// AddIP6 makes ep dual-stack: ip/128 on its eth0 (no duplicate address
// detection: the address is usable at once) and "default via fe80::1 dev
// eth0". As with AddEndpoint, the host side (its route to ip, an address
// answering Gateway6) is left to the caller.
func (ep *Endpoint) AddIP6(ctx context.Context, ip netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !ip.Is6() || ip.Is4In6() {
		return fmt.Errorf("endpoint %s: add %s: not an IPv6 address", ep.Name, ip)
	}
	h, err := ep.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(EndpointIface)
	if err != nil {
		return fmt.Errorf("endpoint %s: find %s: %w", ep.Name, EndpointIface, err)
	}
	a := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, 128)), Flags: unix.IFA_F_NODAD}
	if err := h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("endpoint %s: address %s/128: %w", ep.Name, ip, err)
	}
	gw := net.IP(Gateway6.AsSlice())
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw, Dst: ipNet(netip.MustParsePrefix("::/0"))}); err != nil {
		return fmt.Errorf("endpoint %s: default route via %s: %w", ep.Name, gw, err)
	}
	ep.IP6 = ip
	return nil
}

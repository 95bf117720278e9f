package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/netlinksafe"
	"github.com/romana/romana/route"
)

// routeProtocol tags the host routes the plugin installs with the agent's
// number, so the agent recognises the endpoint routes as its own.
const routeProtocol = netlink.RouteProtocol(route.Protocol)

// The functions here run netlink in the calling thread's network namespace
// (the host's) unless they take a socket (vethPair's) or enter the
// container's with ns.WithNetNSPath.

// vethPair is a veth pair that ADD created, with a netlink socket in each
// of its two namespaces and both links as the kernel reported them, so that
// the steps after the allocation need neither a namespace switch nor a link
// lookup. close releases the container's socket; the host's (hostNL)
// belongs to the caller of createVeth, which closes it.
type vethPair struct {
	host, cont         *current.Interface
	hostLink, contLink netlink.Link
	hostNL, contNL     netlinksafe.Handle
}

func (v *vethPair) close() { v.contNL.Close() }

// hostHandle opens a netlink socket in the calling thread's network
// namespace (the host's); the caller closes it.
func hostHandle() (netlinksafe.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return netlinksafe.Handle{}, fmt.Errorf("open a netlink socket in the host's namespace: %w", err)
	}
	return netlinksafe.Handle{Handle: h}, nil
}

// createVeth creates the pair, both ends up: ifName inside the container's
// namespace at netnsPath, hostVeth in hostNS, which hostNL (a socket there)
// reaches. It fails if either name exists. It may run on any goroutine: it
// switches no namespace but the container's, briefly, to open a socket
// there. (It uses netlink directly rather than plugins/pkg/ip, whose
// ip-masquerade code would pull iptables and nftables into the binary and
// slow every plugin start.) The container side comes up at once: setting a
// link up is the costliest of the steps, and this one runs while romanad
// allocates; without an address or a route the link carries nothing.
func createVeth(hostNL netlinksafe.Handle, hostNS ns.NetNS, netnsPath, ifName, hostVeth string, mtu int) (_ *vethPair, retErr error) {
	fail := func(err error) error {
		return fmt.Errorf("create veth %s (host) / %s (container %s): %w", hostVeth, ifName, netnsPath, err)
	}
	contNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fail(err)
	}
	h, err := netlink.NewHandleAt(contNS, unix.NETLINK_ROUTE)
	contNS.Close()
	if err != nil {
		return nil, fail(fmt.Errorf("open a netlink socket in the container's namespace: %w", err))
	}
	v := &vethPair{hostNL: hostNL, contNL: netlinksafe.Handle{Handle: h}}
	defer func() {
		if retErr != nil {
			v.close()
		}
	}()
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.Flags = ifName, mtu, net.FlagUp
	if err := v.contNL.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: hostVeth, PeerNamespace: netlink.NsFd(int(hostNS.Fd()))}); err != nil {
		return nil, fail(err)
	}
	if v.contLink, err = v.contNL.LinkByName(ifName); err != nil {
		return nil, fail(fmt.Errorf("find %s: %w", ifName, err))
	}
	c := v.contLink.Attrs()
	v.cont = &current.Interface{Name: ifName, Mac: c.HardwareAddr.String(), Mtu: c.MTU, Sandbox: netnsPath}
	if v.hostLink, err = hostNL.LinkByName(hostVeth); err != nil {
		return nil, fmt.Errorf("create veth: find %s: %w", hostVeth, err)
	}
	if err := hostNL.LinkSetUp(v.hostLink); err != nil {
		return nil, fmt.Errorf("create veth: set %s up: %w", hostVeth, err)
	}
	a := v.hostLink.Attrs()
	v.host = &current.Interface{Name: hostVeth, Mac: a.HardwareAddr.String(), Mtu: a.MTU}
	return v, nil
}

// configureContainer gives the container side each address (/32 or /128,
// IPv6 ones without duplicate address detection: romanad made them unique)
// and a default route per family: via Gateway on-link for IPv4, via
// Gateway6 (link-local) for IPv6. createVeth set the link up.
func (v *vethPair) configureContainer(ips []netip.Addr) error {
	ifName, netnsPath := v.cont.Name, v.cont.Sandbox
	for _, ip := range ips {
		if err := v.contNL.AddrReplace(v.contLink, endpointAddr(ip)); err != nil {
			return fmt.Errorf("configure %s in %s: add address %s: %w", ifName, netnsPath, netip.PrefixFrom(ip, ip.BitLen()), err)
		}
	}
	for _, ip := range ips {
		r := defaultRoute(v.contLink.Attrs().Index, ip.Is4())
		if err := v.contNL.RouteReplace(&r); err != nil {
			return fmt.Errorf("configure %s in %s: add route default via %s dev %s: %w", ifName, netnsPath, GatewayFor(ip), ifName, err)
		}
	}
	return nil
}

// endpointAddr is an endpoint's address on its eth0: /32, or /128 without
// DAD.
func endpointAddr(ip netip.Addr) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}
	if ip.Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// gateway6Addr is Gateway6/64 on the host side of a veth, without DAD
// (every veth holds it; each is its own link).
func gateway6Addr() *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(Gateway6.AsSlice()), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
}

// defaultRoute is the endpoint's default route of one family: via Gateway
// on-link, or via Gateway6 (link-local: on the link by definition).
func defaultRoute(linkIndex int, is4 bool) netlink.Route {
	if !is4 {
		return netlink.Route{
			LinkIndex: linkIndex,
			Dst:       &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
			Gw:        net.IP(Gateway6.AsSlice()),
			Family:    netlink.FAMILY_V6,
		}
	}
	return netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        net.IP(Gateway.AsSlice()),
		Flags:     int(netlink.FLAG_ONLINK),
		Family:    netlink.FAMILY_V4,
	}
}

func hostRoute(linkIndex int, addr netip.Addr) netlink.Route {
	fam := netlink.FAMILY_V4
	if addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	return netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())},
		Scope:     netlink.SCOPE_LINK,
		Protocol:  routeProtocol,
		Family:    fam,
	}
}

// configureHost installs "<addr>/32 (or /128) dev <host veth> scope link
// proto 190" (route.Protocol) for each address and, when one is IPv6,
// Gateway6/64 on the host veth, so the host answers the endpoint's
// neighbour solicitations for its gateway there.
func (v *vethPair) configureHost(ips []netip.Addr) error {
	hostVeth := v.host.Name
	for _, ip := range ips {
		if !ip.Is6() {
			continue
		}
		if err := v.hostNL.AddrReplace(v.hostLink, gateway6Addr()); err != nil {
			return fmt.Errorf("add gateway address %s/64 to %s: %w", Gateway6, hostVeth, err)
		}
		break
	}
	for _, ip := range ips {
		r := hostRoute(v.hostLink.Attrs().Index, ip)
		if err := v.hostNL.RouteReplace(&r); err != nil {
			return fmt.Errorf("add host route %s dev %s: %w", r.Dst, hostVeth, err)
		}
	}
	return nil
}

// deleteVeth deletes the host-side veth (and with it the container side and
// the host route). A missing link is not an error.
func deleteVeth(hostVeth string) error {
	l, err := netlinksafe.LinkByName(hostVeth)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(l)
	}
	if err != nil {
		return fmt.Errorf("delete veth %s: %w", hostVeth, err)
	}
	return nil
}

// isOwnNetNS reports whether the namespace at netnsPath is the calling
// thread's (the host's): an ADD there would give the host the container's
// address and default route.
func isOwnNetNS(netnsPath string) (bool, error) {
	var own, other unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &own); err != nil {
		return false, fmt.Errorf("stat own netns: %w", err)
	}
	if err := unix.Stat(netnsPath, &other); err != nil {
		return false, fmt.Errorf("stat netns %s: %w", netnsPath, err)
	}
	return own.Dev == other.Dev && own.Ino == other.Ino, nil
}

// linkExists reports whether h's namespace has a link named name.
func linkExists(h netlinksafe.Handle, name string) (bool, error) {
	_, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &nf):
		return false, nil
	}
	return false, fmt.Errorf("look up link %s: %w", name, err)
}

// listLinks returns the names of the current namespace's links.
func listLinks() ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]string, 0, len(links))
	for _, l := range links {
		out = append(out, l.Attrs().Name)
	}
	return out, nil
}

// checkHost verifies that hostVeth is up and carries the host route to
// each address, and Gateway6 when one is IPv6.
func checkHost(hostVeth string, ips []netip.Addr) error {
	link, err := netlinksafe.LinkByName(hostVeth)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", hostVeth, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", hostVeth)
	}
	for _, ip := range ips {
		want := hostRoute(link.Attrs().Index, ip)
		if !hasRoute(link, want) {
			return fmt.Errorf("host route %s dev %s is missing", want.Dst, hostVeth)
		}
		if ip.Is6() && !hasAddr(link, netip.PrefixFrom(Gateway6, 64)) {
			return fmt.Errorf("host veth %s lacks the gateway address %s/64", hostVeth, Gateway6)
		}
	}
	return nil
}

// hasAddr reports whether link holds p.
func hasAddr(link netlink.Link, p netip.Prefix) bool {
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlinksafe.AddrList(link, fam)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
		ones, _ := a.Mask.Size()
		got, _ := netip.AddrFromSlice(a.IP)
		return got.Unmap() == p.Addr() && ones == p.Bits()
	})
}

// checkContainer verifies ifName in the container: up, holding each
// address (/32 or /128) and the default route of its family.
func checkContainer(netnsPath, ifName string, ips []netip.Addr) error {
	return ns.WithNetNSPath(netnsPath, func(_ ns.NetNS) error {
		link, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("container interface %s in %s: %w", ifName, netnsPath, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("container interface %s in %s is down", ifName, netnsPath)
		}
		for _, ip := range ips {
			if !hasAddr(link, netip.PrefixFrom(ip, ip.BitLen())) {
				return fmt.Errorf("container interface %s in %s lacks %s/%d", ifName, netnsPath, ip, ip.BitLen())
			}
			if !hasRoute(link, defaultRoute(link.Attrs().Index, ip.Is4())) {
				return fmt.Errorf("container route default via %s dev %s is missing in %s", GatewayFor(ip), ifName, netnsPath)
			}
		}
		return nil
	})
}

// hasRoute reports whether link has a route matching want's destination,
// gateway and (when set) protocol in the main table of want's family.
func hasRoute(link netlink.Link, want netlink.Route) bool {
	routes, err := netlinksafe.RouteListFiltered(want.Family, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return false
	}
	for _, r := range routes {
		if dstString(r.Dst, want.Family) != dstString(want.Dst, want.Family) {
			continue
		}
		if !r.Gw.Equal(want.Gw) {
			continue
		}
		if want.Protocol != 0 && r.Protocol != want.Protocol {
			continue
		}
		return true
	}
	return false
}

func dstString(d *net.IPNet, family int) string {
	if d == nil && family == netlink.FAMILY_V6 {
		return "::/0"
	}
	if d == nil {
		return "0.0.0.0/0"
	}
	return d.String()
}

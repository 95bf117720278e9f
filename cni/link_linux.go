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
	"golang.org/x/sys/unix"

	"github.com/romana/romana/netlinksafe"
	"github.com/romana/romana/route"
)

// routeProtocol tags the host routes the plugin installs with the agent's
// number, so the agent recognises the endpoint routes as its own.
const routeProtocol = netlink.RouteProtocol(route.Protocol)

// All functions here run netlink in the calling process's network namespace
// (the host's) unless they enter the container's with ns.WithNetNSPath.

// createVeth creates the pair: ifName inside the container's namespace at
// netnsPath, hostVeth (up) in the current namespace. It fails if either name
// exists. (It uses netlink directly rather than plugins/pkg/ip, whose
// ip-masquerade code would pull iptables and nftables into the binary and
// slow every plugin start.)
func createVeth(netnsPath, ifName, hostVeth string, mtu int) (host, cont *current.Interface, err error) {
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, nil, fmt.Errorf("open host netns: %w", err)
	}
	defer hostNS.Close()
	err = ns.WithNetNSPath(netnsPath, func(_ ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = ifName, mtu
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: hostVeth, PeerNamespace: netlink.NsFd(int(hostNS.Fd()))}); err != nil {
			return err
		}
		c, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("find %s: %w", ifName, err)
		}
		cont = &current.Interface{Name: ifName, Mac: c.Attrs().HardwareAddr.String(), Mtu: c.Attrs().MTU, Sandbox: netnsPath}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create veth %s (host) / %s (container %s): %w", hostVeth, ifName, netnsPath, err)
	}
	h, err := netlinksafe.LinkByName(hostVeth)
	if err != nil {
		return nil, nil, fmt.Errorf("create veth: find %s: %w", hostVeth, err)
	}
	if err := netlink.LinkSetUp(h); err != nil {
		return nil, nil, fmt.Errorf("create veth: set %s up: %w", hostVeth, err)
	}
	return &current.Interface{Name: hostVeth, Mac: h.Attrs().HardwareAddr.String(), Mtu: h.Attrs().MTU}, cont, nil
}

// configureContainer gives ifName in the container ip/32 and a default
// route via Gateway on-link, and sets it up.
func configureContainer(netnsPath, ifName string, addr netip.Addr) error {
	err := ns.WithNetNSPath(netnsPath, func(_ ns.NetNS) error {
		link, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("find link: %w", err)
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrReplace(link, a); err != nil {
			return fmt.Errorf("add address %s/32: %w", addr, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
		r := defaultRoute(link.Attrs().Index)
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("add route default via %s dev %s onlink: %w", Gateway, ifName, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("configure %s in %s: %w", ifName, netnsPath, err)
	}
	return nil
}

func defaultRoute(linkIndex int) netlink.Route {
	return netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        net.IP(Gateway.AsSlice()),
		Flags:     int(netlink.FLAG_ONLINK),
		Family:    netlink.FAMILY_V4,
	}
}

func hostRoute(linkIndex int, addr netip.Addr) netlink.Route {
	return netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(32, 32)},
		Scope:     netlink.SCOPE_LINK,
		Protocol:  routeProtocol,
		Family:    netlink.FAMILY_V4,
	}
}

// addHostRoute installs "<addr>/32 dev <hostVeth> scope link proto 190"
// (route.Protocol).
func addHostRoute(hostVeth string, addr netip.Addr) error {
	link, err := netlinksafe.LinkByName(hostVeth)
	if err != nil {
		return fmt.Errorf("add host route %s/32 dev %s: find link: %w", addr, hostVeth, err)
	}
	r := hostRoute(link.Attrs().Index, addr)
	if err := netlink.RouteReplace(&r); err != nil {
		return fmt.Errorf("add host route %s/32 dev %s: %w", addr, hostVeth, err)
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

// linkExists reports whether the current namespace has a link named name.
func linkExists(name string) (bool, error) {
	_, err := netlinksafe.LinkByName(name)
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

// checkHost verifies that hostVeth is up and carries the host route to addr.
func checkHost(hostVeth string, addr netip.Addr) error {
	link, err := netlinksafe.LinkByName(hostVeth)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", hostVeth, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", hostVeth)
	}
	want := hostRoute(link.Attrs().Index, addr)
	if !hasRoute(link, want) {
		return fmt.Errorf("host route %s/32 dev %s is missing", addr, hostVeth)
	}
	return nil
}

// checkContainer verifies ifName in the container: up, holding addr/32 and
// the default route via Gateway.
func checkContainer(netnsPath, ifName string, addr netip.Addr) error {
	return ns.WithNetNSPath(netnsPath, func(_ ns.NetNS) error {
		link, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("container interface %s in %s: %w", ifName, netnsPath, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("container interface %s in %s is down", ifName, netnsPath)
		}
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s in %s: %w", ifName, netnsPath, err)
		}
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
			ones, _ := a.Mask.Size()
			got, _ := netip.AddrFromSlice(a.IP.To4())
			return got == addr && ones == 32
		}) {
			return fmt.Errorf("container interface %s in %s lacks %s/32", ifName, netnsPath, addr)
		}
		if !hasRoute(link, defaultRoute(link.Attrs().Index)) {
			return fmt.Errorf("container route default via %s dev %s is missing in %s", Gateway, ifName, netnsPath)
		}
		return nil
	})
}

// hasRoute reports whether link has a route matching want's destination,
// gateway and (when set) protocol in the main table.
func hasRoute(link netlink.Link, want netlink.Route) bool {
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return false
	}
	for _, r := range routes {
		if dstString(r.Dst) != dstString(want.Dst) {
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

func dstString(d *net.IPNet) string {
	if d == nil {
		return "0.0.0.0/0"
	}
	return d.String()
}

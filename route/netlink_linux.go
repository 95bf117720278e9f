package route

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/netlinksafe"
)

// New returns a Manager acting on the calling process's network namespace.
func New(log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Manager{k: &netlinkKernel{h: h, sysctlDir: "/proc/sys", last: map[netip.Prefix]netlink.Route{}}, log: log}, nil
}

// netlinkKernel is the real kernel. Its netlink socket belongs to the
// namespace it was opened in; sysctls are written through /proc/sys, which
// resolves in the namespace of the calling thread (for the agent, its own).
type netlinkKernel struct {
	h         netlinksafe.Handle
	sysctlDir string
	// last holds the routes as last listed, to delete exactly what is there;
	// lastTable and lastRules, Policy's.
	last      map[netip.Prefix]netlink.Route
	lastTable map[KernelTableRoute][]netlink.Route
	lastRules map[KernelRule][]netlink.Rule
}

func (k *netlinkKernel) listRoutes(dsts map[netip.Prefix]bool) ([]hoststate.Route, map[netip.Prefix]string, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	raw, err := k.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, nil, err
	}
	links, err := k.h.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	k.last = map[netip.Prefix]netlink.Route{}
	out := make([]hoststate.Route, 0, len(raw))
	foreign := map[netip.Prefix]string{}
	for _, r := range raw {
		var dst netip.Prefix
		if r.Dst == nil {
			if r.Family == unix.AF_INET6 {
				dst = netip.MustParsePrefix("::/0")
			} else {
				dst = netip.MustParsePrefix("0.0.0.0/0")
			}
		} else {
			a, ok := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			if !ok {
				continue
			}
			dst = netip.PrefixFrom(a.Unmap(), ones)
		}
		if r.Protocol != Protocol {
			if dsts[dst] {
				if _, seen := foreign[dst]; !seen {
					foreign[dst] = describe(dst, r, names)
				}
			}
			continue
		}
		hr := hoststate.Route{Dst: dst}
		switch {
		case len(r.MultiPath) > 0:
			hr.Dev = "(multipath)" // never desired: gets replaced or deleted
		case r.Gw != nil:
			gw, _ := netip.AddrFromSlice(r.Gw)
			hr.Via = gw.Unmap()
		case r.Scope == netlink.SCOPE_LINK:
			hr.Dev = names[r.LinkIndex]
		default:
			hr.Dev = names[r.LinkIndex] + " (scope " + r.Scope.String() + ")" // not ours as desired
		}
		k.last[dst] = r
		out = append(out, hr)
	}
	return out, foreign, nil
}

// protoNames are the rtnetlink protocol numbers of /etc/iproute2/rt_protos
// a foreign route most likely has.
var protoNames = map[netlink.RouteProtocol]string{unix.RTPROT_REDIRECT: "redirect", unix.RTPROT_KERNEL: "kernel",
	unix.RTPROT_BOOT: "boot", unix.RTPROT_STATIC: "static", unix.RTPROT_RA: "ra", unix.RTPROT_DHCP: "dhcp",
	unix.RTPROT_ZEBRA: "zebra", unix.RTPROT_BIRD: "bird", unix.RTPROT_KEEPALIVED: "keepalived", unix.RTPROT_BGP: "bgp",
	unix.RTPROT_OSPF: "ospf"}

// describe renders a route as `ip route` would, enough to find it.
func describe(dst netip.Prefix, r netlink.Route, names map[int]string) string {
	var b strings.Builder
	if r.Type != unix.RTN_UNICAST && r.Type != 0 {
		b.WriteString(map[int]string{unix.RTN_BLACKHOLE: "blackhole ", unix.RTN_UNREACHABLE: "unreachable ",
			unix.RTN_PROHIBIT: "prohibit ", unix.RTN_THROW: "throw ", unix.RTN_LOCAL: "local "}[r.Type])
	}
	b.WriteString(dst.String())
	if len(r.MultiPath) > 0 {
		b.WriteString(" (multipath)")
	}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		b.WriteString(" via " + gw.Unmap().String())
	}
	if n := names[r.LinkIndex]; n != "" {
		b.WriteString(" dev " + n)
	}
	if p, ok := protoNames[r.Protocol]; ok {
		b.WriteString(" proto " + p)
	} else {
		fmt.Fprintf(&b, " proto %d", int(r.Protocol))
	}
	if r.Priority != 0 {
		fmt.Fprintf(&b, " metric %d", r.Priority)
	}
	return b.String()
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// route returns r as a netlink route in the main table tagged with Protocol.
func (k *netlinkKernel) route(r hoststate.Route) (*netlink.Route, error) {
	nr := &netlink.Route{Dst: ipNet(r.Dst), Protocol: Protocol, Table: unix.RT_TABLE_MAIN}
	if r.Dev != "" {
		l, err := k.h.LinkByName(r.Dev)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil, fmt.Errorf("%w: %s", ErrLinkNotFound, r.Dev)
			}
			return nil, fmt.Errorf("find link %s: %w", r.Dev, err)
		}
		nr.LinkIndex = l.Attrs().Index
		nr.Scope = netlink.SCOPE_LINK
	} else {
		nr.Gw = net.IP(r.Via.AsSlice())
	}
	return nr, nil
}

func (k *netlinkKernel) addRoute(r hoststate.Route) error {
	nr, err := k.route(r)
	if err != nil {
		return err
	}
	if err := k.h.RouteAdd(nr); errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w: %s", ErrExists, r.Dst)
	} else if err != nil {
		return linkDown(r, err)
	}
	return nil
}

// linkDown wraps ErrLinkDown in the kernel's ENETDOWN for a route through
// a device: the device is not up (yet).
func linkDown(r hoststate.Route, err error) error {
	if r.Dev != "" && errors.Is(err, unix.ENETDOWN) {
		return fmt.Errorf("%w: %s: %w", ErrLinkDown, r.Dev, err)
	}
	return err
}

func (k *netlinkKernel) replaceRoute(r hoststate.Route) error {
	nr, err := k.route(r)
	if err != nil {
		return err
	}
	return linkDown(r, k.h.RouteReplace(nr))
}

func (k *netlinkKernel) deleteRoute(r hoststate.Route) error {
	nr, ok := k.last[r.Dst]
	if !ok {
		nr = netlink.Route{Dst: ipNet(r.Dst), Protocol: Protocol, Table: unix.RT_TABLE_MAIN, Scope: unix.RT_SCOPE_NOWHERE}
	}
	err := k.h.RouteDel(&nr)
	if errors.Is(err, unix.ESRCH) {
		return nil // already gone
	}
	return err
}

// gatewayKinds are the link types accepted as the gateway link: a dummy,
// or, on kernels built without the dummy driver, a bridge without ports
// (it keeps its addresses local and forwards nothing).
var gatewayKinds = map[string]bool{"dummy": true, "bridge": true}

func (k *netlinkKernel) ensureDummy(name string, addr netip.Prefix) error {
	l, err := k.h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		err := k.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = k.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add link %s: %w", name, err)
		}
		if l, err = k.h.LinkByName(name); err != nil {
			return fmt.Errorf("find link %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("find link %s: %w", name, err)
	case !gatewayKinds[l.Type()]:
		return fmt.Errorf("link %s exists and is a %s, not a dummy; remove or rename it", name, l.Type())
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := k.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	addrs, err := k.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(ip.Unmap(), ones) == addr {
			return nil
		}
	}
	if err := k.h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s to %s: %w", addr, name, err)
	}
	return nil
}

func (k *netlinkKernel) deleteDummy(name string) error {
	l, err := k.h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return err
	}
	if !gatewayKinds[l.Type()] {
		return fmt.Errorf("link %s is a %s, not our gateway link; left alone", name, l.Type())
	}
	return k.h.LinkDel(l)
}

// sysctlPath maps a key to its file: dotted keys have their dots turned
// into slashes; keys in slash form (they name an interface, whose name may
// hold a dot) are taken as they are.
func (k *netlinkKernel) sysctlPath(key string) (string, error) {
	rel := key
	if !strings.Contains(key, "/") {
		rel = strings.ReplaceAll(key, ".", "/")
	}
	for _, seg := range strings.Split(rel, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("invalid sysctl key %q", key)
		}
	}
	return filepath.Join(k.sysctlDir, rel), nil
}

// readSysctl wraps ErrLinkNotFound when the key's directory is missing
// (net/ipv6/conf/<link>/... of a link not created yet) and
// errors.ErrUnsupported when the directory exists but the key does not
// (a setting this kernel lacks).
func (k *netlinkKernel) readSysctl(key string) (string, error) {
	p, err := k.sysctlPath(key)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(filepath.Dir(p)); errors.Is(derr, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: %s", ErrLinkNotFound, filepath.Base(filepath.Dir(p)))
		}
		return "", fmt.Errorf("%w: this kernel has no %s", errors.ErrUnsupported, key)
	}
	return string(b), err
}

func (k *netlinkKernel) writeSysctl(key, value string) error {
	p, err := k.sysctlPath(key)
	if err != nil {
		return err
	}
	return os.WriteFile(p, []byte(value), 0o644)
}

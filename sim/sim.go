// Package sim builds a simulated datacenter on one machine from network
// namespaces: a fabric namespace holding an L2 bridge, hosts attached to it
// by veth pairs, and endpoint namespaces attached to hosts the way the CNI
// plugin attaches containers. Nothing is configured in the caller's own
// namespace: sim only creates and deletes named namespaces there.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/model"
)

// BridgeName is the L2 bridge in the fabric namespace.
const BridgeName = "fabric0"

// HostIface is each host's link to the fabric, and EndpointIface each
// endpoint's link to its host.
const (
	HostIface     = "eth0"
	EndpointIface = "eth0"
)

var (
	prefixRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,23}$`)
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,11}$`) // fits "f-<name>" in IFNAMSIZ
	ifaceRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)
)

func checkPrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return fmt.Errorf("lab prefix %q: use 1-24 lowercase letters, digits or '-', starting with a letter", p)
	}
	return nil
}

// Lab is one simulated datacenter. Its methods are safe for concurrent use.
type Lab struct {
	Prefix string
	Fabric *Namespace

	log    *slog.Logger
	record func(ns string) error // NewRecorded's
	mu     sync.Mutex
	owned  []*Namespace // creation order
	hosts  map[string]*Host
	closed bool
}

// Host is a simulated machine: a namespace with eth0 on the fabric.
type Host struct {
	*Namespace
	Name string       // e.g. "h1"
	Addr netip.Prefix // eth0's address, e.g. 192.168.0.1/24
	lab  *Lab
}

// Endpoint is a simulated container: a namespace whose eth0 is a veth into
// its host, with ip/32 and "default via 169.254.1.1 dev eth0 onlink" for
// an IPv4 address, ip/128 and "default via fe80::1 dev eth0" for an IPv6
// one (AddEndpointIPs; the host side then holds fe80::1/64). IP is the
// first address it was made with, IP6 its IPv6 address if it has one
// (AddEndpointIPs sets it too).
type Endpoint struct {
	*Namespace
	Name      string
	Host      *Host
	IP        netip.Addr
	IP6       netip.Addr // set by AddIP6 for a dual-stack endpoint
	HostIface string     // the veth's host side
}

// IPOf returns the endpoint's address of one family (IPv4 when is4), or
// the zero Addr.
func (e *Endpoint) IPOf(is4 bool) netip.Addr {
	switch {
	case is4 && e.IP.Is4():
		return e.IP
	case !is4 && e.IP6.IsValid():
		return e.IP6
	}
	return netip.Addr{}
}

// IPs returns the endpoint's addresses, IPv4 first.
func (e *Endpoint) IPs() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{e.IPOf(true), e.IPOf(false)} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// New creates a lab: the fabric namespace <prefix>-fabric with a bridge.
func New(ctx context.Context, prefix string, log *slog.Logger) (*Lab, error) {
	return NewRecorded(ctx, prefix, log, nil)
}

// NewRecorded is New with record called with each namespace's name before
// the lab creates it (a failure stops the creation), so that a caller can
// keep a list that covers everything the lab made even if it is killed
// (the demo's state file, for `romana demo --down`).
func NewRecorded(ctx context.Context, prefix string, log *slog.Logger, record func(ns string) error) (_ *Lab, retErr error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Lab{Prefix: prefix, log: log, hosts: map[string]*Host{}, record: record}
	defer func() {
		if retErr != nil {
			l.Close()
		}
	}()
	fab, err := l.AddNamespace(ctx, "fabric")
	if err != nil {
		return nil, err
	}
	l.Fabric = fab
	h, err := fab.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if err := loUp(h); err != nil {
		return nil, fmt.Errorf("fabric %s: %w", fab.Name, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName}}
	if err := h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("fabric %s: add bridge %s: %w", fab.Name, BridgeName, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("fabric %s: set bridge %s up: %w", fab.Name, BridgeName, err)
	}
	log.Debug("lab created", "prefix", prefix, "fabric", fab.Name)
	return l, nil
}

// AddNamespace creates and tracks the namespace <prefix>-<name>; Close
// deletes it. The demo and the CNI tests use it for container namespaces.
func (l *Lab) AddNamespace(ctx context.Context, name string) (*Namespace, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab is closed")
	}
	if l.record != nil {
		if err := l.record(l.Prefix + "-" + name); err != nil {
			return nil, fmt.Errorf("record namespace %s-%s: %w", l.Prefix, name, err)
		}
	}
	ns, err := newNamespace(ctx, l.Prefix+"-"+name)
	if err != nil {
		return nil, err
	}
	l.owned = append(l.owned, ns)
	return ns, nil
}

// Host returns the host called name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// AddHost creates host namespace <prefix>-<name> with lo up and eth0
// holding addr, a veth whose peer ("f-<name>") is on the fabric bridge.
func (l *Lab) AddHost(ctx context.Context, name string, addr netip.Prefix) (*Host, error) {
	return l.addMachine(ctx, name, addr, true)
}

// AddController creates a machine on the fabric like AddHost that is not
// one of the lab's hosts (Hosts leaves it out): where romanad runs, so that
// agents reach it over the simulated underlay, as they would in a real
// datacenter. Listen inside it with its Namespace.Listen.
func (l *Lab) AddController(ctx context.Context, name string, addr netip.Prefix) (*Host, error) {
	return l.addMachine(ctx, name, addr, false)
}

func (l *Lab) addMachine(ctx context.Context, name string, addr netip.Prefix, register bool) (*Host, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("add host %q: use 1-12 lowercase letters, digits or '-'", name)
	}
	if !addr.IsValid() {
		return nil, fmt.Errorf("add host %q: invalid address", name)
	}
	if l.Host(name) != nil {
		return nil, fmt.Errorf("add host %q: already exists", name)
	}
	ns, err := l.AddNamespace(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("add host %q: %w", name, err)
	}
	host := &Host{Namespace: ns, Name: name, Addr: addr, lab: l}
	if err := attach(ns, HostIface, l.Fabric, "f-"+name, func(hh, fh *netlink.Handle, inner, outer netlink.Link) error {
		br, err := fh.LinkByName(BridgeName)
		if err != nil {
			return fmt.Errorf("find bridge: %w", err)
		}
		if err := fh.LinkSetMaster(outer, br); err != nil {
			return fmt.Errorf("enslave %s to %s: %w", outer.Attrs().Name, BridgeName, err)
		}
		return hh.AddrAdd(inner, &netlink.Addr{IPNet: ipNet(addr)})
	}); err != nil {
		return nil, fmt.Errorf("add host %q: %w", name, err)
	}
	if register {
		l.mu.Lock()
		l.hosts[name] = host
		l.mu.Unlock()
	}
	l.log.Debug("host added", "host", name, "namespace", ns.Name, "addr", addr)
	return host, nil
}

// AddEndpoint creates endpoint namespace <prefix>-<host>-<name> attached to
// host by the CNI plugin's scheme: a veth with eth0 inside holding ip/32 and
// "default via 169.254.1.1 dev eth0 onlink", and hostIface (default
// "rv-<name>") in the host namespace, up, with no address. The host route to
// the endpoint is the agent's job (from the address's Interface). An IPv6
// ip is attached as AddEndpointIPs does.
func (l *Lab) AddEndpoint(ctx context.Context, host *Host, name string, ip netip.Addr, hostIface string) (*Endpoint, error) {
	return l.AddEndpointIPs(ctx, host, name, []netip.Addr{ip}, hostIface)
}

// AddEndpointIPs is AddEndpoint with one address per family (a dual-stack
// endpoint, or an IPv6-only one), as the CNI plugin attaches them: an IPv6
// address is ip/128 on eth0 (without duplicate address detection) with
// "default via fe80::1 dev eth0", and the host side of the veth holds
// fe80::1/64, so that the host answers neighbour discovery for it.
func (l *Lab) AddEndpointIPs(ctx context.Context, host *Host, name string, ips []netip.Addr, hostIface string) (*Endpoint, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("add endpoint %q: use 1-12 lowercase letters, digits or '-'", name)
	}
	if hostIface == "" {
		hostIface = "rv-" + name
	}
	if !ifaceRE.MatchString(hostIface) {
		return nil, fmt.Errorf("add endpoint %q: invalid host interface name %q", name, hostIface)
	}
	var n4, n6 int
	for i, ip := range ips {
		ips[i] = ip.Unmap()
		switch {
		case !ip.IsValid() || ip.Zone() != "":
			return nil, fmt.Errorf("add endpoint %q: invalid address %s", name, ip)
		case ips[i].Is4():
			n4++
		default:
			n6++
		}
	}
	if len(ips) == 0 || n4 > 1 || n6 > 1 {
		return nil, fmt.Errorf("add endpoint %q: addresses %v: want one or two, of different families", name, ips)
	}
	ns, err := l.AddNamespace(ctx, host.Name+"-"+name)
	if err != nil {
		return nil, fmt.Errorf("add endpoint %q: %w", name, err)
	}
	ep := &Endpoint{Namespace: ns, Name: name, Host: host, IP: ips[0], HostIface: hostIface}
	for _, ip := range ips {
		if ip.Is6() {
			ep.IP6 = ip
		}
	}
	if err := attach(ns, EndpointIface, host.Namespace, hostIface, func(eh, hh *netlink.Handle, inner, outer netlink.Link) error {
		for _, ip := range ips {
			a := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, ip.BitLen()))}
			r := &netlink.Route{LinkIndex: inner.Attrs().Index, Gw: net.IP(hoststate.GatewayAddr.AsSlice()), Flags: int(netlink.FLAG_ONLINK)}
			if ip.Is6() {
				a.Flags = unix.IFA_F_NODAD
				r = &netlink.Route{LinkIndex: inner.Attrs().Index, Gw: net.IP(model.Gateway6.AsSlice()),
					Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}
				gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(model.Gateway6, 64)), Flags: unix.IFA_F_NODAD}
				if err := hh.AddrAdd(outer, gw); err != nil {
					return fmt.Errorf("gateway address %s/64 on %s: %w", model.Gateway6, hostIface, err)
				}
			}
			if err := eh.AddrAdd(inner, a); err != nil {
				return fmt.Errorf("address %s: %w", a.IPNet, err)
			}
			if err := eh.RouteAdd(r); err != nil {
				return fmt.Errorf("default route via %s: %w", r.Gw, err)
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("add endpoint %q on %s: %w", name, host.Name, err)
	}
	l.log.Debug("endpoint added", "endpoint", name, "host", host.Name, "ips", ips, "hostIface", hostIface)
	return ep, nil
}

// AddAddr gives the host's eth0 a second address (an IPv6 underlay
// address beside the IPv4 one, without duplicate address detection).
func (h *Host) AddAddr(p netip.Prefix) error {
	hh, err := h.Handle()
	if err != nil {
		return err
	}
	defer hh.Close()
	l, err := hh.LinkByName(HostIface)
	if err != nil {
		return fmt.Errorf("host %s: find %s: %w", h.Name, HostIface, err)
	}
	if err := hh.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("host %s: add %s to %s: %w", h.Name, p, HostIface, err)
	}
	return nil
}

// ForwardIPv6Uplink does what docs/agent.md leaves to a host's
// administrator for IPv6 endpoints to be reached from other hosts: it sets
// force_forwarding on the host's eth0 (never all.forwarding, so router
// advertisements on the uplink keep being accepted).
func (h *Host) ForwardIPv6Uplink(ctx context.Context) error {
	if _, err := h.Exec(ctx, "sysctl", "-qw", "net/ipv6/conf/"+HostIface+"/force_forwarding=1"); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	return nil
}

// attach creates a veth pair with innerName in inner's namespace and
// outerName in outer's, brings lo, both ends up, and lets configure finish
// (it gets handles in inner and outer and both links) before links go up.
func attach(inner *Namespace, innerName string, outer *Namespace, outerName string,
	configure func(ih, oh *netlink.Handle, in, out netlink.Link) error) error {
	ih, err := inner.Handle()
	if err != nil {
		return err
	}
	defer ih.Close()
	oh, err := outer.Handle()
	if err != nil {
		return err
	}
	defer oh.Close()
	ofd, err := outer.open()
	if err != nil {
		return err
	}
	defer ofd.Close()
	if err := loUp(ih); err != nil {
		return err
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: innerName}, PeerName: outerName, PeerNamespace: netlink.NsFd(int(ofd))}
	if err := ih.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s (peer %s in %s): %w", innerName, outerName, outer.Name, err)
	}
	in, err := ih.LinkByName(innerName)
	if err != nil {
		return fmt.Errorf("find %s: %w", innerName, err)
	}
	out, err := oh.LinkByName(outerName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", outerName, outer.Name, err)
	}
	if err := oh.LinkSetUp(out); err != nil {
		return fmt.Errorf("set %s up: %w", outerName, err)
	}
	if err := ih.LinkSetUp(in); err != nil {
		return fmt.Errorf("set %s up: %w", innerName, err)
	}
	return configure(ih, oh, in, out)
}

func loUp(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Close deletes every namespace the lab created, newest first, which also
// removes every link in them. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	owned := l.owned
	l.owned = nil
	l.closed = true
	l.mu.Unlock()
	var errs []error
	for i := len(owned) - 1; i >= 0; i-- {
		errs = append(errs, deleteNamespace(owned[i].Name))
	}
	return errors.Join(errs...)
}

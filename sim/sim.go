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

	"github.com/romana/romana/hoststate"
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
// its host, with ip/32 and "default via 169.254.1.1 dev eth0 onlink".
type Endpoint struct {
	*Namespace
	Name      string
	Host      *Host
	IP        netip.Addr
	IP6       netip.Addr // set by AddIP6 for a dual-stack endpoint
	HostIface string     // the veth's host side
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
// the endpoint is the agent's job (from the address's Interface).
func (l *Lab) AddEndpoint(ctx context.Context, host *Host, name string, ip netip.Addr, hostIface string) (*Endpoint, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("add endpoint %q: use 1-12 lowercase letters, digits or '-'", name)
	}
	if hostIface == "" {
		hostIface = "rv-" + name
	}
	if !ifaceRE.MatchString(hostIface) {
		return nil, fmt.Errorf("add endpoint %q: invalid host interface name %q", name, hostIface)
	}
	if !ip.Is4() {
		return nil, fmt.Errorf("add endpoint %q: %s: only IPv4 endpoints are simulated", name, ip)
	}
	ns, err := l.AddNamespace(ctx, host.Name+"-"+name)
	if err != nil {
		return nil, fmt.Errorf("add endpoint %q: %w", name, err)
	}
	ep := &Endpoint{Namespace: ns, Name: name, Host: host, IP: ip, HostIface: hostIface}
	if err := attach(ns, EndpointIface, host.Namespace, hostIface, func(eh, _ *netlink.Handle, inner, _ netlink.Link) error {
		if err := eh.AddrAdd(inner, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, 32))}); err != nil {
			return fmt.Errorf("address %s/32: %w", ip, err)
		}
		gw := net.IP(hoststate.GatewayAddr.AsSlice())
		if err := eh.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Gw: gw, Flags: int(netlink.FLAG_ONLINK)}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("add endpoint %q on %s: %w", name, host.Name, err)
	}
	l.log.Debug("endpoint added", "endpoint", name, "host", host.Name, "ip", ip, "hostIface", hostIface)
	return ep, nil
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

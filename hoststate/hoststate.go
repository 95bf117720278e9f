// Package hoststate computes, from romanad's snapshot, the desired kernel
// state of one host: sysctls, the endpoint gateway, routes and the nftables
// ruleset enforcing tenant isolation. It is pure: no I/O, no clock, no
// globals; the agent applies its output through the route and firewall
// adapters.
package hoststate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
)

// GatewayLink and GatewayAddr are the endpoints' gateway scheme, defined
// once in package model (shared with the CNI plugin).
const GatewayLink = model.GatewayLink

// GatewayAddr is the endpoints' default gateway, held by every host.
var GatewayAddr = model.Gateway

// Mode is how packets reach other hosts' endpoints.
type Mode string

// Modes.
const (
	// ModeFlat: all hosts share one L2 segment; each host routes every other
	// host's CIDR via that host's IP (one route per remote host per network).
	ModeFlat Mode = "flat"
	// ModeFabric: the fabric (top-of-rack routers, BGP) routes host CIDRs;
	// the host installs no routes to other hosts.
	ModeFabric Mode = "fabric"
)

// ParseMode parses "flat" or "fabric"; "" is flat.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeFlat:
		return ModeFlat, nil
	case ModeFabric:
		return ModeFabric, nil
	}
	return "", fmt.Errorf("mode %q: want %q or %q", s, ModeFlat, ModeFabric)
}

// Options tune Compute.
type Options struct {
	Mode Mode // "" means ModeFlat
	// Underlay is what the host has (links, addresses, neighbours); nil
	// when unknown, as in tests of the snapshot alone: routes are then
	// screened against the snapshot only, and flat mode ties no block to
	// its host's link-layer address.
	Underlay *Underlay
	// Flowtable offloads established connections of this host's
	// endpoints to a software flowtable (flowtable.go; romana-agent
	// --flowtable, not proven yet).
	Flowtable bool
}

// State is the desired kernel state of one host. All slices are sorted; two
// States computed from equal inputs are equal (reflect.DeepEqual) and print
// the same String.
type State struct {
	Host     string
	Sysctls  []Sysctl
	Gateway  Gateway
	Routes   []Route
	Firewall Ruleset
	// Problems lists objects that were skipped (a malformed address, an
	// unknown tenant, ...). They never stop the rest from being computed.
	Problems []string
	// Refused are routes the host must not install (screenRoutes): a next
	// hop or device it may not use, a destination in its own underlay.
	Refused []Refusal
	// Resolve are remote hosts' addresses (flat mode, known underlay)
	// whose link-layer address the host does not know yet: until it does,
	// their blocks are dropped when they arrive from the underlay, and the
	// agent asks the kernel to resolve them.
	Resolve []netip.Addr
}

// Sysctl is one /proc/sys setting, Key in dotted form
// ("net.ipv4.ip_forward"), or, when it names an interface (whose name may
// hold a dot), in slash form ("net/ipv6/conf/rv-a1/force_forwarding"), the
// path below /proc/sys.
type Sysctl struct {
	Key   string
	Value string
}

func (s Sysctl) String() string { return s.Key + "=" + s.Value }

// Gateway is the dummy link holding the endpoints' gateway address.
type Gateway struct {
	Link string
	Addr netip.Prefix
}

// DefaultGateway is the gateway every host holds.
func DefaultGateway() Gateway {
	return Gateway{Link: GatewayLink, Addr: netip.PrefixFrom(GatewayAddr, GatewayAddr.BitLen())}
}

func (g Gateway) String() string { return g.Addr.String() + " dev " + g.Link }

// Route is one route the host owns, in the main table. Exactly one of Dev
// (an endpoint route, scope link) and Via (a route to another host's CIDR) is set.
type Route struct {
	Dst netip.Prefix
	Dev string
	Via netip.Addr
}

func (r Route) String() string {
	if r.Dev != "" {
		return r.Dst.String() + " dev " + r.Dev + " scope link"
	}
	return r.Dst.String() + " via " + r.Via.String()
}

// ComparePrefix orders prefixes by address, then by length.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// CompareRoutes orders routes by destination, then device, then next hop.
func CompareRoutes(a, b Route) int {
	if c := ComparePrefix(a.Dst, b.Dst); c != 0 {
		return c
	}
	if c := strings.Compare(a.Dev, b.Dev); c != 0 {
		return c
	}
	return a.Via.Compare(b.Via)
}

// String renders the state, one object per line, the ruleset as nft text.
func (s State) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "host %s\n", s.Host)
	for _, x := range s.Sysctls {
		fmt.Fprintf(&b, "sysctl %s\n", x)
	}
	fmt.Fprintf(&b, "gateway %s\n", s.Gateway)
	for _, r := range s.Routes {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	for _, r := range s.Refused {
		fmt.Fprintf(&b, "refused %s\n", r)
	}
	for _, a := range s.Resolve {
		fmt.Fprintf(&b, "resolve %s\n", a)
	}
	b.WriteString(s.Firewall.String())
	return b.String()
}

// network is a usable network with this host's block in it.
type network struct {
	*model.Network
	// mine is this host's block in the network (invalid when it has none).
	mine netip.Prefix
}

// inputs is what one computation reads: the model, this host's view of
// its networks, and the problems found.
type inputs struct {
	m        *model.Model
	host     api.Host
	networks []*network // sorted by name
	byName   map[string]*network
	tenants  []api.Tenant // sorted by ID
	problems map[string]bool
	// underlay is Options.Underlay indexed (nil when unknown).
	underlay *underlay
	// sources are the flat mode sets of remote blocks with their hosts'
	// link-layer addresses (nil in fabric mode or without an underlay).
	sources []Set
}

func (in *inputs) problem(format string, args ...any) {
	in.problems[fmt.Sprintf(format, args...)] = true
}

// takeProblems returns the problems found so far, sorted, and starts a
// new list holding the model's own.
func (in *inputs) takeProblems() []string {
	var out []string
	for p := range in.problems {
		out = append(out, p)
	}
	slices.Sort(out)
	in.problems = map[string]bool{}
	for _, p := range in.m.Problems() {
		in.problems[p] = true
	}
	return out
}

// Compute returns the desired state of host in snap; see ComputeModel.
func Compute(snap api.Snapshot, host string, opts Options) (State, error) {
	return ComputeModel(model.New(snap), host, opts)
}

// ComputeModel returns the desired state of host. It fails only when the
// host itself is unknown or opts are invalid; problems with individual
// objects are skipped and listed in State.Problems.
func ComputeModel(m *model.Model, host string, opts Options) (State, error) {
	st, in, err := routing(m, host, opts)
	if err != nil {
		return State{}, err
	}
	fw, problems := firewall(in, nil)
	if opts.Flowtable {
		addFlowtable(&fw, in, st.Routes)
	}
	st.Firewall = fw
	st.Problems = append(st.Problems, problems...)
	slices.Sort(st.Problems)
	st.Problems = slices.Compact(st.Problems)
	return st, nil
}

// ComputeRouting returns the desired state of host without its firewall
// (Firewall is empty, Problems are those of the routing part and of the
// model): what the agent's route manager applies. It reads no policy.
func ComputeRouting(m *model.Model, host string, opts Options) (State, error) {
	st, _, err := routing(m, host, opts)
	return st, err
}

// ComputeFirewall returns the ruleset of host and the problems found
// computing it (with the model's own). A Compiler does the same, faster
// when few policies changed since its last call.
func ComputeFirewall(m *model.Model, host string, opts Options) (Ruleset, []string, error) {
	return (*Compiler)(nil).Firewall(m, host, opts)
}

// routing computes sysctls, the gateway, routes and (flat mode, known
// underlay) the anti-spoofing sources; the inputs it returns hold the
// sources and a fresh problem list for the firewall part.
func routing(m *model.Model, host string, opts Options) (State, *inputs, error) {
	mode, err := ParseMode(string(opts.Mode))
	if err != nil {
		return State{}, nil, err
	}
	in, err := index(m, host)
	if err != nil {
		return State{}, nil, err
	}
	in.underlay = indexUnderlay(opts.Underlay)
	st := State{
		Host:    host,
		Gateway: DefaultGateway(),
		Sysctls: []Sysctl{{"net.ipv4.ip_forward", "1"}},
	}
	st.Routes = endpointRoutes(in)
	if mode == ModeFlat {
		st.Routes = append(st.Routes, hostRoutes(in)...)
	}
	st.Routes, st.Refused = screenRoutes(st.Routes, in, in.underlay)
	st.Routes = dedupRoutes(st.Routes, in)
	st.Sysctls = append(st.Sysctls, forwardIPv6(st.Routes)...)
	if mode == ModeFlat && in.underlay != nil {
		in.sources, st.Resolve = underlaySources(st.Routes, in, in.underlay)
	}
	st.Problems = in.takeProblems()
	return st, in, nil
}

// firewall computes the ruleset from inputs that went through routing,
// with the policies compiled by cache (nil: none cached).
func firewall(in *inputs, cache *Compiler) (Ruleset, []string) {
	rs := isolation(in, in.m.HasChains(), cache)
	addPolicies(&rs, in, cache)
	return rs, in.takeProblems()
}

// index takes this host's view of the model.
func index(m *model.Model, host string) (*inputs, error) {
	h, ok := m.Host(host)
	if !ok {
		return nil, fmt.Errorf("host %q is not registered with romanad", host)
	}
	in := &inputs{m: m, host: h, byName: map[string]*network{}, tenants: m.Tenants(), problems: map[string]bool{}}
	for _, p := range m.Problems() {
		in.problems[p] = true
	}
	for _, n := range m.Networks() {
		nw := &network{Network: n}
		for _, s := range h.Slots {
			if s.Network != n.Name {
				continue
			}
			if c, err := n.Plan.HostCIDR(s.Loc); err != nil || c != s.CIDR {
				in.problem("host %q: slot in network %q: cidr %s does not match location %s", host, n.Name, s.CIDR, s.Loc)
				continue
			}
			nw.mine = s.CIDR
		}
		in.networks = append(in.networks, nw)
		in.byName[n.Name] = nw
	}
	return in, nil
}

// endpointRoutes returns "<ip>/32 dev <veth>" for this host's addresses
// that have an interface.
func endpointRoutes(in *inputs) []Route {
	var out []Route
	seen := map[netip.Addr]string{}
	for _, a := range in.m.AddressesOn(in.host.Name) {
		if a.Interface == "" {
			continue
		}
		ip := a.IP.Unmap()
		if !ip.IsValid() || ip.Zone() != "" {
			in.problem("address %q: invalid ip %q; skipped", a.Name, a.IP)
			continue
		}
		if !api.IsLinkName(a.Interface) {
			in.problem("address %q: invalid interface name %q; skipped", a.Name, a.Interface)
			continue
		}
		if n := in.byName[a.Network]; n == nil {
			in.problem("address %q: unknown network %q; skipped", a.Name, a.Network)
			continue
		} else if !n.Plan.Prefix().Contains(ip) {
			in.problem("address %q: %s is not in network %q (%s); skipped", a.Name, ip, a.Network, n.Plan.Prefix())
			continue
		}
		if other, dup := seen[ip]; dup {
			in.problem("address %q: %s is also address %q's; skipped", a.Name, ip, other)
			continue
		}
		seen[ip] = a.Name
		out = append(out, Route{Dst: netip.PrefixFrom(ip, ip.BitLen()), Dev: a.Interface})
	}
	return out
}

// forwardIPv6 returns, for each local IPv6 endpoint's veth (an endpoint
// route's device), the setting that makes the kernel forward IPv6 packets
// arriving on it: force_forwarding (Linux 6.17 and later). Linux forwards
// IPv6 when net.ipv6.conf.all.forwarding is on or the *incoming*
// interface's force_forwarding is; the per-interface "forwarding" only
// switches the interface between host and router behaviour (and with it,
// accept_ra=1 stops accepting router advertisements). Setting
// all.forwarding would turn every interface into a router and stop RAs on
// the uplink, so Romana sets only its veths' force_forwarding: endpoint
// egress, and endpoint to endpoint on the host. Forwarding what arrives on
// the uplink toward endpoints is the administrator's to enable (see
// docs/agent.md). Keys name an interface, so they are in slash form.
func forwardIPv6(routes []Route) []Sysctl {
	var out []Sysctl
	for _, r := range routes {
		if r.Dev != "" && r.Dst.Addr().Is6() {
			out = append(out, Sysctl{"net/ipv6/conf/" + r.Dev + "/force_forwarding", "1"})
		}
	}
	slices.SortFunc(out, func(a, b Sysctl) int { return strings.Compare(a.Key, b.Key) })
	return slices.CompactFunc(out, func(a, b Sysctl) bool { return a == b })
}

// hostRoutes returns, for flat L2 mode, one route per remote host per
// network: "<remote host CIDR> via <remote host IP>", the host's underlay
// address of the network's family (api.Host.UnderlayIP: IP, or IP6 for an
// IPv6 network beside an IPv4 IP).
func hostRoutes(in *inputs) []Route {
	var out []Route
	for _, h := range in.m.Hosts() {
		if h.Name == in.host.Name {
			continue
		}
		for _, s := range h.Slots {
			n := in.byName[s.Network]
			if n == nil {
				continue // the network's own problem is already reported
			}
			ip := h.UnderlayIP(n.Plan.Is4())
			switch {
			case !h.IP.IsValid():
				in.problem("host %q: no ip; no route to its block %s", h.Name, s.CIDR)
				continue
			case !ip.IsValid():
				in.problem("host %q: ip %s and network %q are of different families (and no ip6); no route to its block %s", h.Name, h.IP.Unmap(), n.Name, s.CIDR)
				continue
			case ip == in.host.UnderlayIP(ip.Is4()):
				in.problem("host %q: has this host's ip %s; no route to its block %s", h.Name, ip, s.CIDR)
				continue
			}
			if c, err := n.Plan.HostCIDR(s.Loc); err != nil || c != s.CIDR {
				in.problem("host %q: slot in network %q: cidr %s does not match location %s", h.Name, n.Name, s.CIDR, s.Loc)
				continue
			}
			out = append(out, Route{Dst: s.CIDR, Via: ip})
		}
	}
	return out
}

// dedupRoutes sorts routes and keeps the first of those with the same
// destination: the kernel holds one route per destination in a table.
func dedupRoutes(rs []Route, in *inputs) []Route {
	slices.SortFunc(rs, CompareRoutes)
	out := rs[:0]
	for _, r := range rs {
		if len(out) > 0 && out[len(out)-1].Dst == r.Dst {
			in.problem("route %s conflicts with route %s; skipped", r, out[len(out)-1])
			continue
		}
		out = append(out, r)
	}
	return out
}

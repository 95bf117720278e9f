package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
	"github.com/romana/romana/bird"
	"github.com/romana/romana/cnirun"
	"github.com/romana/romana/fabric"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
)

// Fabric topologies and route sources of FabricOptions.
const (
	TopologyLeafSpine = "leafspine"
	RoutesBGP         = "bgp"
	RoutesStatic      = "static"
)

// FabricOptions select the routed-fabric demo: hosts in racks behind
// top-of-rack routers and a spine, the routers being real BIRD 2
// instances, instead of hosts on one L2 segment.
type FabricOptions struct {
	Topology string // TopologyLeafSpine
	// Routes is how the routers learn Romana's blocks: RoutesBGP (the
	// agents announce their host's block to their top-of-rack; the
	// top-of-racks announce their rack's block to the spine) or
	// RoutesStatic (romanad's generated static routes loaded into BIRD).
	Routes string
	// Scale is how many endpoints are added once the fabric converged, to
	// show that no fabric router's table changes (0: 100; negative: none).
	Scale int
	// DualStack adds an IPv6 underlay (every host and link gets an IPv6
	// address too), the IPv6 twin of the plan on a /48 ULA, an IPv6 BGP
	// session beside each IPv4 one (or IPv6 static routes), and an IPv6
	// address for every endpoint; the matrix is also checked over IPv6.
	DualStack bool
}

// RouterReport is one fabric router's kernel routing table, restricted to
// Romana's pool, next to the number of endpoints the fabric carries.
type RouterReport struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Group     string   `json:"group,omitempty"`
	Routes    []string `json:"routes"`
	Endpoints int      `json:"endpoints"`
	Sessions  []string `json:"sessions,omitempty"` // BGP: "h1 Established"
}

// FabricResult is the routed-fabric demo's outcome.
type FabricResult struct {
	Plan     string         `json:"plan"`
	Routes   string         `json:"routes"`
	Routers  []RouterReport `json:"routers"`
	Scaled   []RouterReport `json:"scaled,omitempty"` // after adding Scale endpoints
	Hosts    []HostReport   `json:"hosts"`
	Matrix   Matrix         `json:"matrix"`
	Matrix6  *Matrix        `json:"matrix6,omitempty"` // over IPv6, with DualStack
	OK       bool           `json:"ok"`
	Problems []string       `json:"problems,omitempty"`
}

// The leaf-spine plan: 10.0.0.0/8, rack 4 | host 4 | tenant 4 | segment 4
// | endpoint 8: a rack owns a /12, a host a /16.
var fabricNetwork = api.Network{
	Name: "pods",
	CIDR: "10.0.0.0/8",
	Fields: []plan.Field{
		{Name: "rack", Bits: 4},
		{Name: plan.FieldHost, Bits: 4},
		{Name: plan.FieldTenant, Bits: 4},
		{Name: plan.FieldSegment, Bits: 4},
	},
}

// fabricNetwork6 is the IPv6 twin of fabricNetwork on a /48 ULA, with the
// same levels: fd00:1234:5678::/48, rack 4 | host 12 | tenant 8 | segment 8
// | endpoint 48: a rack owns a /52, a host a /64.
var fabricNetwork6 = api.Network{
	Name: "pods6",
	CIDR: "fd00:1234:5678::/48",
	Fields: []plan.Field{
		{Name: "rack", Bits: 4},
		{Name: plan.FieldHost, Bits: 12},
		{Name: plan.FieldTenant, Bits: 8},
		{Name: plan.FieldSegment, Bits: 8},
	},
}

// Fabric ASNs: hosts share one private ASN, each router has its own.
const (
	hostASN  = 64512
	spineASN = 65100
)

// lsRack is one rack: its top-of-rack router and hosts.
type lsRack struct {
	name   string // label value, "r1"
	tor    string // "tor1"
	subnet netip.Prefix
	uplink netip.Prefix // the top-of-rack's end of its link to the spine; the spine's is the other address of the /31
	// subnet6 and uplink6 are the same in IPv6 (--dual-stack): a /64 and a /127.
	subnet6, uplink6 netip.Prefix
	hosts            []string
}

var lsRacks = []lsRack{
	{name: "r1", tor: "tor1", subnet: netip.MustParsePrefix("192.168.1.1/24"), uplink: netip.MustParsePrefix("172.16.0.1/31"),
		subnet6: netip.MustParsePrefix("fd00:0:0:1::1/64"), uplink6: netip.MustParsePrefix("fd00:0:0:ff::1/127"), hosts: []string{"h1", "h2"}},
	{name: "r2", tor: "tor2", subnet: netip.MustParsePrefix("192.168.2.1/24"), uplink: netip.MustParsePrefix("172.16.0.3/31"),
		subnet6: netip.MustParsePrefix("fd00:0:0:2::1/64"), uplink6: netip.MustParsePrefix("fd00:0:0:ff::3/127"), hosts: []string{"h3", "h4"}},
}

// underlay covers the racks' host subnets; lsControllerAddr is romanad's
// machine in rack 1.
var (
	underlay         = netip.MustParsePrefix("192.168.0.0/16")
	underlay6        = netip.MustParsePrefix("fd00::/48")
	lsControllerAddr = netip.MustParsePrefix("192.168.1.250/24")
)

func hostIP(r lsRack, i int) netip.Prefix {
	a := r.subnet.Addr().As4()
	a[3] = byte(10 + i)
	return netip.PrefixFrom(netip.AddrFrom4(a), r.subnet.Bits())
}

// hostIP6 is hostIP's IPv6 twin: fd00:0:0:<rack>::<10+i>.
func hostIP6(r lsRack, i int) netip.Prefix {
	a := r.subnet6.Addr().As16()
	a[15] = byte(0x10 + i)
	return netip.PrefixFrom(netip.AddrFrom16(a), r.subnet6.Bits())
}

func spineEnd(r lsRack) netip.Addr  { return r.uplink.Addr().Prev() }
func spineEnd6(r lsRack) netip.Addr { return r.uplink6.Addr().Prev() }

// lsDevices is the fabric as romana devices; dual adds the IPv6 host links
// and uplinks.
func lsDevices(dual bool) []api.Device {
	spine := api.Device{Name: "spine1", Kind: api.DeviceSpine, ASN: spineASN, RouterID: netip.MustParseAddr("172.31.255.100")}
	var out []api.Device
	for i, r := range lsRacks {
		d := api.Device{Name: r.tor, Kind: api.DeviceToR, Group: map[string]string{"rack": r.name},
			ASN: spineASN + 1 + uint32(i), RouterID: netip.AddrFrom4([4]byte{172, 31, 255, byte(i + 1)}),
			Links: []api.DeviceLink{{Local: r.subnet}, {Peer: spine.Name, Local: r.uplink, Remote: spineEnd(r)}}}
		spine.Links = append(spine.Links, api.DeviceLink{Peer: r.tor, Local: netip.PrefixFrom(spineEnd(r), 31), Remote: r.uplink.Addr()})
		if dual {
			d.Links = append(d.Links, api.DeviceLink{Local: r.subnet6}, api.DeviceLink{Peer: spine.Name, Local: r.uplink6, Remote: spineEnd6(r)})
			spine.Links = append(spine.Links, api.DeviceLink{Peer: r.tor, Local: netip.PrefixFrom(spineEnd6(r), 127), Remote: r.uplink6.Addr()})
		}
		out = append(out, d)
	}
	return append([]api.Device{spine}, out...)
}

// sessionName is the BIRD protocol of the BGP session with peer over
// addr's family: the peer's name, with "v6" for IPv6.
func sessionName(peer string, addr netip.Addr) string {
	if addr.Is4() {
		return peer
	}
	return peer + "v6"
}

// router is a fabric router: a namespace running BIRD.
type router struct {
	dev  api.Device
	ns   *sim.Namespace
	bird *bird.Router
}

// leafSpine is one fabric demo's live state, on top of the flat demo's.
type leafSpine struct {
	*run
	f       FabricOptions
	plan    *plan.Plan
	plans   []*plan.Plan // plan, then its IPv6 twin with DualStack
	routers []*router    // spine first
	hostNS  map[string]*sim.Namespace
	// ip6 holds each endpoint's IPv6 address (DualStack), by endpoint name.
	mu6 sync.Mutex
	ip6 map[string]netip.Addr
}

// RunFabric runs the routed-fabric demo (`romana demo --fabric leafspine`).
// Like Run, it removes everything on exit unless o.Keep, and fails when
// connectivity differs from the expected one or a fabric router's table
// changed when endpoints were added.
func RunFabric(ctx context.Context, o Options, f FabricOptions) (res FabricResult, retErr error) {
	ls, err := newLeafSpine(o, f)
	if err != nil {
		return res, err
	}
	defer func() {
		if ls.o.Keep && retErr == nil {
			retErr = ls.kept()
			return
		}
		if err := ls.teardown(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if err := ls.setup(ctx); err != nil {
		return res, err
	}
	return ls.prove(ctx)
}

func newLeafSpine(o Options, f FabricOptions) (*leafSpine, error) {
	if f.Topology != TopologyLeafSpine {
		return nil, fmt.Errorf("--fabric %q: the only topology is %q", f.Topology, TopologyLeafSpine)
	}
	switch f.Routes {
	case "":
		f.Routes = RoutesBGP
	case RoutesBGP, RoutesStatic:
	default:
		return nil, fmt.Errorf("--fabric-routes %q: use %q or %q", f.Routes, RoutesBGP, RoutesStatic)
	}
	if f.Scale == 0 {
		f.Scale = 100
	}
	if err := prepare(&o); err != nil {
		return nil, err
	}
	if _, err := os.Stat(bird.Daemon); err != nil {
		return nil, fmt.Errorf("the fabric demo runs BIRD 2 routers: install Debian's bird2 (%s): %w", bird.Daemon, err)
	}
	if err := checkFree(o.Prefix); err != nil {
		return nil, err
	}
	ls := &leafSpine{run: &run{o: o, say: sayer(o)}, f: f, hostNS: map[string]*sim.Namespace{}, ip6: map[string]netip.Addr{}}
	for _, n := range ls.networks() {
		p, err := plan.Parse(n.Spec())
		if err != nil {
			return nil, err
		}
		ls.plans = append(ls.plans, p)
	}
	ls.plan = ls.plans[0]
	return ls, nil
}

// networks are the demo's networks: pods, and pods6 with DualStack.
func (ls *leafSpine) networks() []api.Network {
	if ls.f.DualStack {
		return []api.Network{fabricNetwork, fabricNetwork6}
	}
	return []api.Network{fabricNetwork}
}

func (ls *leafSpine) bin(b string) string { return filepath.Join(ls.o.BinDir, b) }

// sh runs ip/sysctl commands in a namespace, stopping at the first failure.
func sh(ctx context.Context, ns *sim.Namespace, cmds ...string) error {
	for _, c := range cmds {
		if _, err := ns.Exec(ctx, strings.Fields(c)...); err != nil {
			return err
		}
	}
	return nil
}

func (ls *leafSpine) setup(ctx context.Context) error {
	var err error
	if ls.dir, err = os.MkdirTemp("", "romana-demo-"); err != nil {
		return err
	}
	if err := writeState(ls.o.Prefix, ls.dir); err != nil {
		return err
	}
	if ls.lab, err = ls.newLab(ctx); err != nil {
		return err
	}
	stack := ""
	if ls.f.DualStack {
		stack = ", dual-stack (IPv4 and IPv6 underlay, sessions and routes)"
	}
	ls.say("== leaf-spine fabric: %d racks x 2 hosts, a top-of-rack router per rack and a spine, all BIRD 2; routes by %s%s", len(lsRacks), ls.f.Routes, stack)
	for _, d := range lsDevices(ls.f.DualStack) {
		ns, err := ls.lab.AddNamespace(ctx, d.Name)
		if err != nil {
			return err
		}
		if err := sh(ctx, ns, "ip link set lo up", "sysctl -q -w net.ipv4.ip_forward=1"); err != nil {
			return err
		}
		if ls.f.DualStack {
			// A router namespace forwards IPv6 on every interface.
			if err := sh(ctx, ns, "sysctl -q -w net.ipv6.conf.all.forwarding=1"); err != nil {
				return err
			}
		}
		ls.routers = append(ls.routers, &router{dev: d, ns: ns})
	}
	spine := ls.routers[0]
	for i, r := range lsRacks {
		tor := ls.routers[i+1]
		if err := sh(ctx, tor.ns,
			"ip link add hosts0 type bridge",
			"ip link set hosts0 up",
			"ip addr add "+r.subnet.String()+" dev hosts0",
			"ip link add up0 type veth peer name "+r.tor+" netns "+spine.ns.Name,
			"ip addr add "+r.uplink.String()+" dev up0",
			"ip link set up0 up",
			// The underlay (hosts' and the controller's subnets) is routed
			// statically; BIRD only carries Romana's blocks.
			"ip route add "+underlay.String()+" via "+spineEnd(r).String()); err != nil {
			return err
		}
		if err := sh(ctx, spine.ns,
			"ip addr add "+netip.PrefixFrom(spineEnd(r), 31).String()+" dev "+r.tor,
			"ip link set "+r.tor+" up",
			"ip route add "+r.subnet.Masked().String()+" via "+r.uplink.Addr().String()); err != nil {
			return err
		}
		if ls.f.DualStack {
			if err := sh(ctx, tor.ns,
				"ip addr add "+r.subnet6.String()+" dev hosts0 nodad",
				"ip addr add "+r.uplink6.String()+" dev up0 nodad",
				"ip -6 route add "+underlay6.String()+" via "+spineEnd6(r).String()); err != nil {
				return err
			}
			if err := sh(ctx, spine.ns,
				"ip addr add "+netip.PrefixFrom(spineEnd6(r), 127).String()+" dev "+r.tor+" nodad",
				"ip -6 route add "+r.subnet6.Masked().String()+" via "+r.uplink6.Addr().String()); err != nil {
				return err
			}
		}
	}
	// romanad runs on a machine in rack 1, reached over the routed underlay.
	ctl, err := ls.lab.AddNamespace(ctx, "ctl")
	if err != nil {
		return err
	}
	r1, tor1 := lsRacks[0], ls.routers[1]
	if err := sh(ctx, ctl,
		"ip link set lo up",
		"ip link add eth0 type veth peer name h-ctl netns "+tor1.ns.Name,
		"ip addr add "+lsControllerAddr.String()+" dev eth0",
		"ip link set eth0 up",
		"ip route add default via "+r1.subnet.Addr().String()); err != nil {
		return err
	}
	if err := sh(ctx, tor1.ns, "ip link set h-ctl master hosts0", "ip link set h-ctl up"); err != nil {
		return err
	}
	ls.say("== romanad on an embedded etcd (%s), on controller %s at %s in rack %s (mutual TLS)", ls.dir, ctl.Name, lsControllerAddr.Addr(), r1.name)
	ls.cp, err = startControlPlane(ctx, ls.dir, ls.o.BinDir, ctl, lsControllerAddr.Addr())
	if ls.cp != nil && ls.cp.proc != nil {
		ls.romanad = ls.cp.proc
		ls.recordPID(ls.romanad)
	}
	if err != nil {
		return err
	}
	ls.cli, ls.sock = ls.cp.cli, ls.cp.sock
	for _, n := range ls.networks() {
		if _, err := ls.cli.AddNetwork(ctx, n); err != nil {
			return err
		}
	}
	for _, t := range demoTenants {
		if _, err := ls.cli.AddTenant(ctx, t); err != nil {
			return err
		}
		for _, s := range demoSegments {
			if _, err := ls.cli.AddSegment(ctx, api.Segment{Tenant: t.Name, Name: s}); err != nil {
				return err
			}
		}
	}
	for _, rt := range ls.routers {
		if _, err := ls.cli.PutDevice(ctx, rt.dev); err != nil {
			return err
		}
	}
	for i, r := range lsRacks {
		tor := ls.routers[i+1]
		for j, h := range r.hosts {
			ns, err := ls.lab.AddNamespace(ctx, h)
			if err != nil {
				return err
			}
			ip := hostIP(r, j+1)
			if err := sh(ctx, ns,
				"ip link set lo up",
				"ip link add eth0 type veth peer name h-"+h+" netns "+tor.ns.Name,
				"ip addr add "+ip.String()+" dev eth0",
				"ip link set eth0 up",
				"ip route add default via "+r.subnet.Addr().String()); err != nil {
				return err
			}
			if err := sh(ctx, tor.ns, "ip link set h-"+h+" master hosts0", "ip link set h-"+h+" up"); err != nil {
				return err
			}
			ls.hostNS[h] = ns
			host := api.Host{Name: h, IP: ip.Addr(), Labels: map[string]string{"rack": r.name}}
			if ls.f.DualStack {
				ip6 := hostIP6(r, j+1)
				// The uplink forwards IPv6 toward the endpoints: Romana sets
				// force_forwarding on endpoint veths only (docs/agent.md).
				if err := sh(ctx, ns,
					"ip addr add "+ip6.String()+" dev eth0 nodad",
					"ip -6 route add default via "+r.subnet6.Addr().String(),
					"sysctl -q -w net.ipv6.conf.eth0.force_forwarding=1"); err != nil {
					return err
				}
				host.IP6 = ip6.Addr()
			}
			if _, err := ls.cli.AddHost(ctx, host); err != nil {
				return err
			}
		}
	}

	ls.say("== one romana-agent per host, in fabric mode%s, joined with a single-use token over TLS", map[bool]string{true: ", announcing its host's block over BGP", false: ""}[ls.f.Routes == RoutesBGP])
	ls.attach = map[string]*cnirun.Runtime{}
	var names []string
	for _, r := range lsRacks {
		for _, h := range r.hosts {
			names = append(names, h)
			args, env, _, err := ls.cp.joinArgs(ctx, h)
			if err != nil {
				return err
			}
			args = append(args, "--resync", "2s", "--mode", "fabric", "--metrics-listen", "")
			if ls.f.Routes == RoutesBGP {
				args = append(args, "--bgp", "--bgp-hold-time", "9s", "--bgp-connect-retry", "1s")
			}
			a, err := startProcEnv("agent-"+h, ls.dir, ls.hostNS[h].Name, env, ls.bin("romana-agent"), args...)
			if err != nil {
				return err
			}
			ls.recordPID(a)
			ls.agents = append(ls.agents, a)
			conf := ls.cp.cniConf(h)
			if ls.f.DualStack {
				// Two networks accept every tenant: the plugin's address
				// comes from pods (its IPv6 twin, from addIP6).
				if conf, err = withNetwork(conf, fabricNetwork.Name); err != nil {
					return err
				}
			}
			rt, err := cnirun.New(ls.hostNS[h].Path, []string{ls.o.BinDir}, filepath.Join(ls.dir, "cni-cache"), conf)
			if err != nil {
				return err
			}
			ls.attach[h] = rt
		}
	}
	if err := ls.cp.waitJoined(ctx, names, ls.agents); err != nil {
		return err
	}

	if err := ls.startRouters(ctx); err != nil {
		return err
	}

	ls.say("== endpoints attached through romana-cni (libcni, as a container runtime does)")
	eps, err := ls.addEndpoints(ctx, placement(4), 1)
	ls.eps = append(ls.eps, eps...)
	return err
}

// startRouters renders each router's BIRD configuration from romanad's
// view of the fabric and starts it in its namespace.
func (ls *leafSpine) startRouters(ctx context.Context) error {
	hosts, err := ls.cli.ListHosts(ctx)
	if err != nil {
		return err
	}
	// Per family: the pool, and the lengths of a host's and a rack's block.
	type fam struct {
		pools            []netip.Prefix
		hostLen, rackLen int
		aggr             string
	}
	fams := map[bool]fam{}
	for _, p := range ls.plans {
		hostLen, rackLen := p.Prefix().Bits(), p.Prefix().Bits()
		for _, lv := range p.Levels() {
			if lv.Name == "rack" {
				rackLen += lv.Bits
			}
			hostLen += lv.Bits
		}
		aggr := "romana_aggr"
		if !p.Is4() {
			aggr = "romana_aggr6"
		}
		fams[p.Is4()] = fam{pools: []netip.Prefix{p.Prefix()}, hostLen: hostLen + p.HostBits(), rackLen: rackLen, aggr: aggr}
	}
	for _, rt := range ls.routers {
		w, err := ls.cli.FabricRoutes(ctx, rt.dev.Name)
		if err != nil {
			return err
		}
		tab := fabric.FromWire(w)
		for _, p := range tab.Problems {
			ls.say("  warning: %s: %s", rt.dev.Name, p)
		}
		conf := bird.Config{RouterID: rt.dev.RouterID, ASN: rt.dev.ASN}
		switch {
		case ls.f.Routes == RoutesStatic:
			conf.Extra = fabric.RenderBird(tab)
		case rt.dev.Kind == api.DeviceToR:
			// Hosts announce their block; the top-of-rack announces only
			// its rack's aggregate upward.
			conf.Aggregates = tab.Announce
			for _, l := range rt.dev.Links {
				f, ok := fams[l.Local.Addr().Is4()]
				switch {
				case !ok:
				case l.Peer == "": // a host link: a session with each host on it
					for _, h := range hosts {
						ip := h.UnderlayIP(l.Local.Addr().Is4())
						if !fabric.Serves(rt.dev, h.Labels) || !l.Local.Contains(ip) {
							continue
						}
						conf.Neighbors = append(conf.Neighbors, bird.Neighbor{Name: sessionName(h.Name, ip), Local: l.Local.Addr(), Addr: ip, ASN: hostASN,
							Import: "where net ~ " + bird.PrefixSet(f.pools, f.hostLen), Export: "none", HoldTime: 9, ConnectRetry: 1})
					}
				default:
					conf.Neighbors = append(conf.Neighbors, bird.Neighbor{Name: sessionName(l.Peer, l.Remote), Local: l.Local.Addr(), Addr: l.Remote, ASN: spineASN,
						Import: "where net ~ " + bird.PrefixSet(f.pools, f.rackLen), Export: fmt.Sprintf("where proto = %q", f.aggr), HoldTime: 9, ConnectRetry: 1})
				}
			}
		default: // the spine: learns each rack's aggregate, passes the others on
			for _, l := range rt.dev.Links {
				f, ok := fams[l.Remote.Is4()]
				if !ok {
					continue
				}
				tor := ls.device(l.Peer)
				conf.Neighbors = append(conf.Neighbors, bird.Neighbor{Name: sessionName(l.Peer, l.Remote), Local: l.Local.Addr(), Addr: l.Remote, ASN: tor.ASN,
					Import: "where net ~ " + bird.PrefixSet(f.pools, f.rackLen), Export: "where source = RTS_BGP", HoldTime: 9, ConnectRetry: 1})
			}
		}
		rt.bird = bird.New(rt.dev.Name, rt.ns.Name, ls.dir)
		if err := rt.bird.Start(ctx, conf.Render()); err != nil {
			return err
		}
		ls.recordRouter(rt.bird.PID())
	}
	return nil
}

func (ls *leafSpine) device(name string) api.Device {
	for _, r := range ls.routers {
		if r.dev.Name == name {
			return r.dev
		}
	}
	return api.Device{}
}

// recordRouter adds a BIRD PID to the demo's state file so that `romana
// demo --down` stops it after a --keep or a hard kill.
func (ls *leafSpine) recordRouter(pid int) {
	if pid != 0 {
		_ = updateState(ls.o.Prefix, func(s *state) { s.PIDs = append(s.PIDs, pid) })
	}
}

// addEndpoints attaches endpoints through the CNI plugin, a few at a time;
// first numbers their namespaces.
func (ls *leafSpine) addEndpoints(ctx context.Context, eps []Endpoint, first int) ([]Endpoint, error) {
	out := make([]Endpoint, len(eps))
	errs := make([]error, len(eps))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, e := range eps {
		e.Name = fmt.Sprintf("e%d", first+i)
		ns, err := ls.lab.AddNamespace(ctx, e.Name)
		if err != nil {
			return nil, err
		}
		e.NS = ns.Path
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			args := [][2]string{{"ROMANA_TENANT", e.Tenant}, {"ROMANA_SEGMENT", e.Segment}}
			r, err := ls.attach[e.Host].Add(ctx, e.Name, e.NS, "eth0", args)
			if err != nil {
				errs[i] = fmt.Errorf("endpoint %s: %w", e.Name, err)
				return
			}
			res, err := current.NewResultFromResult(r)
			if err != nil || len(res.IPs) == 0 {
				errs[i] = fmt.Errorf("endpoint %s: CNI result has no address: %v", e.Name, err)
				return
			}
			e.IP, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
			if ls.f.DualStack {
				if err := ls.addIP6(ctx, e, res); err != nil {
					errs[i] = fmt.Errorf("endpoint %s: %w", e.Name, err)
					return
				}
			}
			out[i] = e
		}()
	}
	wg.Wait()
	var done []Endpoint
	for i, e := range out {
		if errs[i] == nil {
			done = append(done, e)
		}
	}
	return done, errors.Join(errs...)
}

// withNetwork sets the "network" of a CNI network configuration.
func withNetwork(conf []byte, network string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, fmt.Errorf("CNI configuration: %w", err)
	}
	m["network"] = network
	return json.Marshal(m)
}

// addIP6 gives a CNI-attached endpoint its IPv6 address, until the CNI
// plugin attaches dual-stack itself: romanad allocates it in pods6 for the
// same host, tenant and segment, on the endpoint's veth (so the agent
// routes it and applies policy to it), and the demo puts it on the
// endpoint's eth0 with a default route via fe80::1, an address it gives
// the host side of the veth.
func (ls *leafSpine) addIP6(ctx context.Context, e Endpoint, res *current.Result) error {
	var hostIf string
	for _, i := range res.Interfaces {
		if i.Sandbox == "" {
			hostIf = i.Name
		}
	}
	if hostIf == "" {
		return errors.New("CNI result names no host interface")
	}
	a, err := ls.cli.Allocate(ctx, api.AddressRequest{Name: e.Name + "-v6", Network: fabricNetwork6.Name, Host: e.Host,
		Tenant: e.Tenant, Segment: e.Segment, Interface: hostIf})
	if err != nil {
		return fmt.Errorf("allocate an IPv6 address: %w", err)
	}
	epNS := filepath.Base(e.NS)
	ns := &sim.Namespace{Name: epNS, Path: e.NS}
	if err := sh(ctx, ns,
		"ip -6 addr add "+netip.PrefixFrom(a.IP, 128).String()+" dev eth0 nodad",
		"ip -6 route add default via "+sim.Gateway6.String()+" dev eth0"); err != nil {
		return err
	}
	if err := sh(ctx, ls.hostNS[e.Host], "ip -6 addr add "+sim.Gateway6.String()+"/64 dev "+hostIf+" nodad"); err != nil {
		return err
	}
	ls.mu6.Lock()
	ls.ip6[e.Name] = a.IP
	ls.mu6.Unlock()
	return nil
}

// matrix6 probes every ordered pair of the first endpoints over IPv6 (TCP
// and ping), as the IPv4 matrix does.
func (ls *leafSpine) matrix6(ctx context.Context, eps []Endpoint) (Matrix, error) {
	var v6 []Endpoint
	for _, e := range eps {
		e.IP = ls.ip6[e.Name]
		if !e.IP.IsValid() {
			return Matrix{}, fmt.Errorf("endpoint %s has no IPv6 address", e.Name)
		}
		l, err := listenIn(e.NS, netip.AddrPortFrom(e.IP, ProbePort))
		if err != nil {
			return Matrix{}, err
		}
		ls.mu.Lock()
		ls.lsns = append(ls.lsns, l)
		ls.mu.Unlock()
		go serve(l)
		v6 = append(v6, e)
	}
	n := len(v6)
	m := Matrix{Endpoints: v6, Cells: make([]Cell, n*n)}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, src := range v6 {
		for j, dst := range v6 {
			c := &m.Cells[i*n+j]
			c.From, c.To = src.Name, dst.Name
			if i == j {
				continue
			}
			c.Expected = Expect(tenantModes(), src, dst)
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				c.TCP = dialIn(src.NS, netip.AddrPortFrom(dst.IP, ProbePort), time.Second) == nil
				c.Ping = pingIn(ctx, filepath.Base(src.NS), dst.IP, time.Second)
			}()
		}
	}
	wg.Wait()
	return m, ctx.Err()
}

// routerReport reads one router's kernel routes inside the pool (as `ip
// route` shows them) and, with BGP, its sessions.
func (ls *leafSpine) routerReport(ctx context.Context, rt *router) (RouterReport, error) {
	rep := RouterReport{Name: rt.dev.Name, Kind: rt.dev.Kind, Group: fabric.GroupString(rt.dev.Group), Endpoints: len(ls.eps), Routes: []string{}}
	var out string
	for _, p := range ls.plans {
		fam := "-4"
		if !p.Is4() {
			fam = "-6"
		}
		o, err := rt.ns.Exec(ctx, "ip", fam, "route", "show", "root", p.Prefix().String())
		if err != nil {
			return rep, err
		}
		out += o
	}
	var cur string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, "\t") || strings.HasPrefix(l, " "):
			cur += " " + strings.Join(strings.Fields(l), " ")
			rep.Routes[len(rep.Routes)-1] = cur
		default:
			cur = strings.Join(strings.Fields(l), " ")
			rep.Routes = append(rep.Routes, cur)
		}
	}
	if ls.f.Routes == RoutesBGP {
		for _, n := range ls.neighbors(rt) {
			up, err := rt.bird.Established(ctx, n)
			state := "down"
			if err != nil {
				state = "unknown"
			} else if up {
				state = "Established"
			}
			rep.Sessions = append(rep.Sessions, n+" "+state)
		}
	}
	return rep, nil
}

// neighbors names a router's BGP protocols (its peers).
func (ls *leafSpine) neighbors(rt *router) []string {
	var out []string
	if rt.dev.Kind == api.DeviceToR {
		for _, r := range lsRacks {
			if r.tor == rt.dev.Name {
				out = append(out, r.hosts...)
				if ls.f.DualStack {
					for _, h := range r.hosts {
						out = append(out, h+"v6")
					}
				}
			}
		}
	}
	for _, l := range rt.dev.Links {
		if l.Peer != "" {
			out = append(out, sessionName(l.Peer, l.Remote))
		}
	}
	return out
}

// wantDsts is what a router's kernel must route inside the pool once
// converged: its static table, plus, with BGP, the other racks'
// aggregates a top-of-rack learns from the spine instead of the pool route.
func (ls *leafSpine) wantDsts(ctx context.Context, rt *router) ([]netip.Prefix, error) {
	w, err := ls.cli.FabricRoutes(ctx, rt.dev.Name)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range w.Routes {
		if ls.f.Routes == RoutesBGP && slices.ContainsFunc(ls.plans, func(p *plan.Plan) bool { return p.Prefix() == r.Dst }) {
			continue
		}
		out = append(out, r.Dst)
	}
	if ls.f.Routes == RoutesBGP && rt.dev.Kind == api.DeviceToR {
		sw, err := ls.cli.FabricRoutes(ctx, "spine1")
		if err != nil {
			return nil, err
		}
		for _, r := range sw.Routes {
			out = append(out, r.Dst)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

func routeDsts(rep RouterReport) []netip.Prefix {
	var out []netip.Prefix
	for _, l := range rep.Routes {
		f := strings.Fields(l)
		i := 0
		if len(f) > 0 && (f[0] == "blackhole" || f[0] == "unreachable") {
			i = 1
		}
		if len(f) > i {
			if p, err := netip.ParsePrefix(f[i]); err == nil {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// converge waits until every router routes exactly what it should, every
// BGP session is up, and every agent programmed its endpoints.
func (ls *leafSpine) converge(ctx context.Context) ([]RouterReport, error) {
	var reps []RouterReport
	err := waitFor(ctx, 90*time.Second, 300*time.Millisecond, func() error {
		reps = reps[:0]
		for _, rt := range ls.routers {
			rep, err := ls.routerReport(ctx, rt)
			if err != nil {
				return err
			}
			for _, s := range rep.Sessions {
				if !strings.HasSuffix(s, "Established") {
					return fmt.Errorf("%s: BGP session %s", rt.dev.Name, s)
				}
			}
			want, err := ls.wantDsts(ctx, rt)
			if err != nil {
				return err
			}
			if got := routeDsts(rep); !slices.Equal(got, want) {
				return fmt.Errorf("%s routes %v, want %v", rt.dev.Name, got, want)
			}
			reps = append(reps, rep)
		}
		return ls.agentsReady(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("the fabric did not converge: %w\n%s%s", err, ls.agentLogs(), ls.routerLogs())
	}
	return reps, nil
}

// agentsReady checks every host routes each of its endpoints.
func (ls *leafSpine) agentsReady(ctx context.Context) error {
	per := map[string]int{}
	for _, e := range ls.eps {
		per[e.Host]++
	}
	for _, r := range lsRacks {
		for _, h := range r.hosts {
			rep, err := ls.hostReport(ctx, api.Host{Name: h})
			if err != nil {
				return err
			}
			if n := len(rep.Routes) - rep.RemoteRoutes; n < per[h] {
				return fmt.Errorf("host %s routes %d of its %d endpoints", h, n, per[h])
			}
		}
	}
	return nil
}

func (ls *leafSpine) routerLogs() string {
	var b strings.Builder
	for _, rt := range ls.routers {
		if rt.bird != nil {
			fmt.Fprintf(&b, "bird %s log:\n%s\n", rt.dev.Name, rt.bird.Tail(10))
		}
	}
	return b.String()
}

func (ls *leafSpine) sayRouters(reps []RouterReport) {
	ls.say("  %-7s %-6s %-8s %7s %10s", "ROUTER", "KIND", "GROUP", "ROUTES", "ENDPOINTS")
	for _, r := range reps {
		group := r.Group
		if group == "" {
			group = "-"
		}
		ls.say("  %-7s %-6s %-8s %7d %10d", r.Name, r.Kind, group, len(r.Routes), r.Endpoints)
		for _, l := range r.Routes {
			ls.say("      %s", l)
		}
		if len(r.Sessions) > 0 {
			ls.say("      BGP: %s", strings.Join(r.Sessions, ", "))
		}
	}
}

func (ls *leafSpine) prove(ctx context.Context) (FabricResult, error) {
	res := FabricResult{Plan: ls.plan.String(), Routes: ls.f.Routes}
	ls.say("\n== address plan\n  %s", ls.plan)
	if ls.f.DualStack {
		ls.say("  %s", ls.plans[1])
	}
	hosts, err := ls.cli.ListHosts(ctx)
	if err != nil {
		return res, err
	}
	slices.SortFunc(hosts, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range lsRacks {
		for _, h := range hosts {
			if h.Labels["rack"] != r.name || len(h.Slots) == 0 {
				continue
			}
			g, err := ls.plan.GroupCIDR(h.Slots[0].Loc.Groups)
			if err != nil {
				return res, err
			}
			ls.say("  rack %s %-13s host %s underlay %-13s owns %s (behind %s)", r.name, g, h.Name, h.IP, h.Slots[0].CIDR, r.tor)
		}
	}
	ls.say("\n== endpoints")
	for _, e := range ls.eps {
		if ip6, ok := ls.ip6[e.Name]; ok {
			ls.say("  %-3s %-17s %-11s %s", e.Name, e.Label(), e.IP, ip6)
			continue
		}
		ls.say("  %-3s %-17s %s", e.Name, e.Label(), e.IP)
	}

	ls.say("\n== waiting for the fabric to converge (%s)", map[bool]string{true: "BGP sessions, announcements", false: "static routes loaded into BIRD"}[ls.f.Routes == RoutesBGP])
	reps, err := ls.converge(ctx)
	if err != nil {
		return res, err
	}
	res.Routers = reps
	var pools []string
	for _, p := range ls.plans {
		pools = append(pools, p.Prefix().String())
	}
	ls.say("\n== fabric routers: kernel routes to Romana's pool %s, next to the number of endpoints", strings.Join(pools, " and "))
	ls.sayRouters(reps)
	for _, h := range hosts {
		hr, err := ls.hostReport(ctx, h)
		if err != nil {
			return res, err
		}
		res.Hosts = append(res.Hosts, hr)
	}
	ls.say("\n  hosts (fabric mode) route only their own endpoints: %s", hostsSummary(res.Hosts))

	ls.say("\n== connectivity: TCP connect to port %d and ping, every ordered pair (racks r1 = h1,h2 and r2 = h3,h4)", ProbePort)
	m, err := ls.matrix(ctx)
	if err != nil {
		return res, err
	}
	res.Matrix = m
	if !ls.o.JSON {
		m.Render(ls.o.Out)
	}
	for _, c := range m.Mismatches() {
		res.Problems = append(res.Problems, fmt.Sprintf("%s -> %s: expected %s, tcp %s, ping %s", c.From, c.To, verdict(c.Expected), verdict(c.TCP), verdict(c.Ping)))
	}
	allowed, blocked := 0, 0
	for _, c := range m.Cells {
		switch {
		case c.From == c.To:
		case c.Expected:
			allowed++
		default:
			blocked++
		}
	}
	if ls.f.DualStack {
		ls.say("\n== connectivity over IPv6: TCP connect to port %d and ping, every ordered pair", ProbePort)
		m6, err := ls.matrix6(ctx, ls.eps)
		if err != nil {
			return res, err
		}
		res.Matrix6 = &m6
		if !ls.o.JSON {
			m6.Render(ls.o.Out)
		}
		for _, c := range m6.Mismatches() {
			res.Problems = append(res.Problems, fmt.Sprintf("IPv6 %s -> %s: expected %s, tcp %s, ping %s", c.From, c.To, verdict(c.Expected), verdict(c.TCP), verdict(c.Ping)))
		}
	}

	if ls.f.Scale > 0 {
		ls.say("\n== adding %d endpoints", ls.f.Scale)
		var more []Endpoint
		for i := 0; i < ls.f.Scale; i++ {
			t := demoTenants[i%len(demoTenants)]
			more = append(more, Endpoint{Host: lsRacks[i%2].hosts[(i/2)%2], Tenant: t.Name, Segment: demoSegments[(i/4)%len(demoSegments)]})
		}
		added, err := ls.addEndpoints(ctx, more, len(ls.eps)+1)
		ls.eps = append(ls.eps, added...) // teardown releases them
		if err != nil {
			return res, err
		}
		scaled, err := ls.converge(ctx)
		if err != nil {
			return res, err
		}
		res.Scaled = scaled
		ls.sayRouters(scaled)
		for i, r := range scaled {
			if !slices.Equal(r.Routes, res.Routers[i].Routes) {
				res.Problems = append(res.Problems, fmt.Sprintf("router %s changed its table when endpoints were added: %q -> %q", r.Name, res.Routers[i].Routes, r.Routes))
			}
		}
		// A new endpoint reaches an old one in the other rack at once.
		last := added[len(added)-1]
		for _, e := range ls.eps[:8] {
			if e.Tenant == last.Tenant && rackOf(e.Host) != rackOf(last.Host) && Expect(tenantModes(), last, e) {
				ok := dialIn(last.NS, netip.AddrPortFrom(e.IP, ProbePort), 2*time.Second) == nil
				ls.say("  new endpoint %s (%s) -> %s (%s) across racks: tcp %s", last.Name, last.Label(), e.Name, e.Label(), verdict(ok))
				if !ok {
					res.Problems = append(res.Problems, fmt.Sprintf("new endpoint %s cannot reach %s across racks", last.Name, e.Name))
				}
				if ip6, dual := ls.ip6[e.Name]; dual {
					ok := dialIn(last.NS, netip.AddrPortFrom(ip6, ProbePort), 2*time.Second) == nil
					ls.say("  new endpoint %s -> %s across racks over IPv6 (%s): tcp %s", last.Name, e.Name, ip6, verdict(ok))
					if !ok {
						res.Problems = append(res.Problems, fmt.Sprintf("new endpoint %s cannot reach %s across racks over IPv6", last.Name, e.Name))
					}
				}
				break
			}
		}
	}

	res.OK = len(res.Problems) == 0
	if ls.o.JSON {
		enc := json.NewEncoder(ls.o.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return res, err
		}
	}
	if !res.OK {
		return res, fmt.Errorf("the fabric demo failed:\n  %s", strings.Join(res.Problems, "\n  "))
	}
	over := ""
	if ls.f.DualStack {
		over = " (over IPv4 and over IPv6)"
	}
	ls.say("\nPASS: %d pairs reachable and %d pairs isolated as expected across racks%s; fabric routers carry %s routes whatever the number of endpoints",
		allowed, blocked, over, routeCounts(res.Routers))
	return res, nil
}

func tenantModes() map[string]string {
	modes := map[string]string{}
	for _, t := range demoTenants {
		modes[t.Name] = t.Isolation
	}
	return modes
}

func rackOf(host string) string {
	for _, r := range lsRacks {
		if slices.Contains(r.hosts, host) {
			return r.name
		}
	}
	return ""
}

func routeCounts(reps []RouterReport) string {
	parts := make([]string, len(reps))
	for i, r := range reps {
		parts[i] = fmt.Sprintf("%s %d", r.Name, len(r.Routes))
	}
	return strings.Join(parts, ", ")
}

func hostsSummary(hs []HostReport) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = fmt.Sprintf("%s %d routes (%d to other hosts)", h.Name, len(h.Routes), h.RemoteRoutes)
	}
	return strings.Join(parts, ", ")
}

// teardown releases the endpoints (CNI DEL, a few at a time: there are
// over a hundred; on hosts whose agent runs, see agentUp), stops the routers by PID, then removes the rest like
// the flat demo.
func (ls *leafSpine) teardown() error {
	var errs []error
	if ls.romanad != nil && !ls.romanad.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		delErrs := make([]error, len(ls.eps))
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for i, e := range ls.eps {
			rt := ls.attach[e.Host]
			if rt == nil || !ls.agentUp(e.Host) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				delErrs[i] = rt.Del(ctx, e.Name, e.NS, "eth0", nil)
			}()
		}
		wg.Wait()
		cancel()
		errs = append(errs, delErrs...)
		ls.eps = nil // released: the flat demo's teardown has nothing left to delete
	}
	for _, rt := range ls.routers {
		if rt.bird != nil {
			errs = append(errs, rt.bird.Stop())
		}
	}
	errs = append(errs, ls.run.teardown())
	return errors.Join(errs...)
}

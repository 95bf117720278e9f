// Package demo runs `romana demo`: a simulated multi-host datacenter built
// from network namespaces on this machine, driven the way a real deployment
// is (romanad on an embedded store, one romana-agent per host, endpoints
// attached through the real CNI plugin via libcni), which then proves
// routing and tenant isolation with real TCP connections and pings.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cnirun"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
)

// Options configure a demo run.
type Options struct {
	Hosts  int       // simulated hosts (default 3)
	Prefix string    // namespace prefix (default DefaultPrefix)
	BinDir string    // where romanad, romana-agent and romana-cni are (default: beside this executable)
	Keep   bool      // leave everything running
	CLI    string    // how to run romana, in the commands --keep prints (default "romana")
	JSON   bool      // print the Result as JSON instead of tables
	Out    io.Writer // default os.Stdout
	Log    *slog.Logger

	// DualStack gives every endpoint an IPv6 address too (demoNetwork6,
	// same tenant and segment) and checks the matrix over both families
	// (--dual-stack; the flat demo only, so far).
	DualStack bool
}

// DefaultPrefix is the demo's namespace prefix when Options.Prefix is empty.
const DefaultPrefix = "romd"

// HostReport is what one simulated host ended up with.
type HostReport struct {
	Name         string   `json:"name"`
	IP           string   `json:"ip"`
	CIDR         string   `json:"cidr"`
	Routes       []string `json:"routes"`       // Romana's routes in the host's main table
	RemoteRoutes int      `json:"remoteRoutes"` // routes to other hosts' CIDRs
	NftRules     int      `json:"nftRules"`
	NftElements  int      `json:"nftElements"`
}

// Result is the demo's outcome.
type Result struct {
	Plan     string       `json:"plan"`
	Hosts    []HostReport `json:"hosts"`
	Matrix   Matrix       `json:"matrix"`
	OK       bool         `json:"ok"`
	Problems []string     `json:"problems,omitempty"`

	// Matrix6 is the same matrix over IPv6 (--dual-stack).
	Matrix6 *Matrix `json:"matrix6,omitempty"`
}

// Demo address plan: 10.0.0.0/8, host 8 | tenant 4 | segment 4 | endpoint 8.
var demoNetwork = api.Network{
	Name: "demo",
	CIDR: "10.0.0.0/8",
	Fields: []plan.Field{
		{Name: plan.FieldHost, Bits: 8},
		{Name: plan.FieldTenant, Bits: 4},
		{Name: plan.FieldSegment, Bits: 4},
	},
}

// demoNetwork6 is the IPv6 network of --dual-stack: the same fields on a
// /48 ULA (host blocks are /56s, 64 endpoint bits).
var demoNetwork6 = api.Network{
	Name:   "demo6",
	CIDR:   "fd00:1234:5678::/48",
	Fields: demoNetwork.Fields,
}

// Two tenants with two segments each; globex isolates its segments.
var demoTenants = []api.Tenant{
	{Name: "acme", Isolation: api.IsolationTenant},
	{Name: "globex", Isolation: api.IsolationSegment},
}

var demoSegments = []string{"web", "db"}

// Underlay: hosts sit on one L2 segment, 192.168.77.0/24, inside the lab.
// controllerAddr is where romanad listens, on the hosts' L2 segment.
var controllerAddr = netip.MustParsePrefix("192.168.77.250/24")

func hostAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, 77, byte(10 + i)}), 24)
}

// hostAddr6 is host i's IPv6 underlay address (--dual-stack), beside
// hostAddr on the same segment.
func hostAddr6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x77, 15: byte(10 + i)}), 64)
}

// networks are the networks the demo allocates from.
func (o Options) networks() []api.Network {
	if o.DualStack {
		return []api.Network{demoNetwork, demoNetwork6}
	}
	return []api.Network{demoNetwork}
}

// placement spreads every tenant/segment over two hosts and puts different
// tenants side by side on each host.
func placement(hosts int) []Endpoint {
	var eps []Endpoint
	i := 0
	for _, t := range demoTenants {
		for _, s := range demoSegments {
			for k := 0; k < 2; k++ {
				eps = append(eps, Endpoint{
					Name:    fmt.Sprintf("e%d", len(eps)+1),
					Host:    fmt.Sprintf("h%d", i%hosts+1),
					Tenant:  t.Name,
					Segment: s,
				})
				i++
			}
		}
	}
	return eps
}

// Run runs the demo. It returns an error when the demo could not be built or
// when observed connectivity differs from the expected one.
func Run(ctx context.Context, o Options) (res Result, retErr error) {
	d, err := startFlat(ctx, o)
	if err != nil {
		return res, err
	}
	defer d.finish(&retErr)
	return d.prove(ctx)
}

// startFlat checks the options and builds the flat datacenter: romanad,
// hosts with agents, and the endpoints of placement(). The caller defers
// finish. On error everything built so far is already torn down.
func startFlat(ctx context.Context, o Options) (*run, error) {
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.Hosts < 2 || o.Hosts > 50 {
		return nil, fmt.Errorf("--hosts %d: use 2 to 50", o.Hosts)
	}
	if err := prepare(&o); err != nil {
		return nil, err
	}
	// Never over another demo with this prefix (a kept one, or what a hard
	// kill left): that is for `romana demo --down` to remove.
	if err := checkFree(o.Prefix); err != nil {
		return nil, err
	}
	d := &run{o: o, say: sayer(o)}
	if err := d.setup(ctx); err != nil {
		return nil, errors.Join(err, d.teardown())
	}
	return d, nil
}

// finish leaves the datacenter up (--keep, after success) or tears it down,
// reporting a teardown failure through retErr when nothing failed before.
func (d *run) finish(retErr *error) {
	if d.o.Keep && *retErr == nil {
		if err := d.kept(); err != nil {
			*retErr = err
		}
		return
	}
	if err := d.teardown(); err != nil && *retErr == nil {
		*retErr = err
	}
}

// kept marks the state as kept and says how to reach the running demo with
// romana: romanad's unix socket (admin, root only; the agents' TLS address
// is inside the simulated underlay, which this machine's namespace does not
// reach), three commands to try, and how to take it down.
func (d *run) kept() error {
	if err := updateState(d.o.Prefix, func(s *state) { s.Kept = true }); err != nil {
		return fmt.Errorf("--keep: record the demo as kept: %w", err)
	}
	cli := d.o.CLI
	if cli == "" {
		cli = "romana"
	}
	d.say("\n--keep: everything stays up (state in %s). Point romana at it (as root, over romanad's unix socket):", d.dir)
	d.say("  export ROMANA_SERVER=unix://%s", d.sock)
	d.say("Then try:")
	d.say("  %s host list", cli)
	d.say("  %s address list", cli)
	if len(d.eps) >= 2 {
		from, to := d.eps[0], d.eps[len(d.eps)-1]
		d.say("  %s policy trace --from %s --to %s --port %d      # %s to %s", cli, from.IP, to.IP, ProbePort, from.Label(), to.Label())
	}
	d.say("Take it down with: %s", strings.Replace(downCommand(d.o.Prefix), "romana", cli, 1))
	return nil
}

// sayer prints progress lines unless the output is JSON.
func sayer(o Options) func(string, ...any) {
	return func(format string, args ...any) {
		if !o.JSON {
			fmt.Fprintf(o.Out, format+"\n", args...)
		}
	}
}

// prepare fills in Options defaults and checks root and the binaries.
func prepare(o *Options) error {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo creates network namespaces: run it as root")
	}
	if o.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find binaries: %w", err)
		}
		o.BinDir = filepath.Dir(exe)
	}
	for _, b := range []string{"romanad", "romana-agent", "romana-cni"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return fmt.Errorf("binary %s not found in %s (run `make build`): %w", b, o.BinDir, err)
		}
	}
	return nil
}

// run is one demo's live state.
type run struct {
	o       Options
	say     func(string, ...any)
	dir     string
	lab     *sim.Lab
	romanad *proc
	agents  []*proc
	cli     *client.Client
	sock    string
	cp      *controlPlane
	eps     []Endpoint
	attach  map[string]*cnirun.Runtime // by host
	// routes6: hostReport lists IPv6 routes too (the flat demo's
	// --dual-stack; the leaf-spine demo reports its own way).
	routes6 bool
	mu      sync.Mutex
	lsns    []io.Closer
}

func (d *run) setup(ctx context.Context) error {
	var err error
	d.dir, err = os.MkdirTemp("", "romana-demo-")
	if err != nil {
		return err
	}
	if err := writeState(d.o.Prefix, d.dir); err != nil {
		return err
	}
	bin := func(b string) string { return filepath.Join(d.o.BinDir, b) }
	d.routes6 = d.o.DualStack
	d.lab, err = d.newLab(ctx)
	if err != nil {
		return err
	}
	ctl, err := d.lab.AddController(ctx, "ctl", controllerAddr)
	if err != nil {
		return err
	}
	d.say("== romanad on an embedded etcd (%s), in controller namespace %s at %s (mutual TLS)", d.dir, ctl.Namespace.Name, controllerAddr.Addr())
	d.cp, err = startControlPlane(ctx, d.dir, d.o.BinDir, ctl.Namespace, controllerAddr.Addr())
	if d.cp != nil && d.cp.proc != nil {
		d.romanad = d.cp.proc
		d.recordPID(d.romanad)
	}
	if err != nil {
		return err
	}
	d.cli, d.sock = d.cp.cli, d.cp.sock
	for _, n := range d.o.networks() {
		if _, err := d.cli.AddNetwork(ctx, n); err != nil {
			return err
		}
	}
	for _, t := range demoTenants {
		if _, err := d.cli.AddTenant(ctx, t); err != nil {
			return err
		}
		for _, s := range demoSegments {
			if _, err := d.cli.AddSegment(ctx, api.Segment{Tenant: t.Name, Name: s}); err != nil {
				return err
			}
		}
	}
	d.say("== %d hosts on one L2 segment, one romana-agent each, joined with a single-use token", d.o.Hosts)
	d.attach = map[string]*cnirun.Runtime{}
	var names []string
	for i := 1; i <= d.o.Hosts; i++ {
		name := fmt.Sprintf("h%d", i)
		names = append(names, name)
		h, err := d.lab.AddHost(ctx, name, hostAddr(i))
		if err != nil {
			return err
		}
		ah := api.Host{Name: name, IP: h.Addr.Addr()}
		if d.o.DualStack {
			// The administrator's part (docs/agent.md): an IPv6 underlay
			// address, and IPv6 forwarding on the uplink only.
			if err := h.AddAddr(hostAddr6(i)); err != nil {
				return err
			}
			if err := h.ForwardIPv6Uplink(ctx); err != nil {
				return err
			}
			ah.IP6 = hostAddr6(i).Addr()
		}
		if _, err := d.cli.AddHost(ctx, ah); err != nil {
			return err
		}
		args, env, tok, err := d.cp.joinArgs(ctx, name)
		if err != nil {
			return err
		}
		if i == 1 {
			d.say("   $ romana host add %s --ip %s       # prints a join token, valid once, for 10 minutes here", name, h.Addr.Addr())
			d.say("   $ romana-agent --join %s... --server %s --host %s", tok[:14], d.cp.URL, name)
		}
		a, err := startProcEnv("agent-"+name, d.dir, h.Namespace.Name, env, bin("romana-agent"),
			append(args, "--resync", "2s", "--mode", "flat")...)
		if err != nil {
			return err
		}
		d.recordPID(a)
		d.agents = append(d.agents, a)
		conf := d.cp.cniConf(name)
		if d.o.DualStack {
			if conf, err = withNetworks(conf, demoNetwork.Name, demoNetwork6.Name); err != nil {
				return err
			}
		}
		rt, err := cnirun.New(h.Path, []string{d.o.BinDir}, filepath.Join(d.dir, "cni-cache"), conf)
		if err != nil {
			return err
		}
		d.attach[name] = rt
	}
	if err := d.cp.waitJoined(ctx, names, d.agents); err != nil {
		return err
	}
	d.say("   every agent joined as host:NAME over TLS and serves the CNI plugin on its own socket (the plugin holds no credential)")

	d.say("== endpoints attached through romana-cni (libcni, as a container runtime does)")
	for _, e := range placement(d.o.Hosts) {
		if _, err := d.attachEndpoint(ctx, e.Name, e.Host, e.Tenant, e.Segment); err != nil {
			return err
		}
	}
	return nil
}

// attachEndpoint attaches one endpoint through the CNI plugin, as a
// container runtime does, and records it for teardown.
func (d *run) attachEndpoint(ctx context.Context, name, host, tenant, segment string) (Endpoint, error) {
	e := Endpoint{Name: name, Host: host, Tenant: tenant, Segment: segment}
	ns, err := d.lab.AddNamespace(ctx, e.Name)
	if err != nil {
		return e, err
	}
	e.NS = ns.Path
	r, err := d.attach[host].Add(ctx, e.Name, e.NS, "eth0", [][2]string{{"ROMANA_TENANT", tenant}, {"ROMANA_SEGMENT", segment}})
	if err != nil {
		return e, err
	}
	cr, err := current.NewResultFromResult(r)
	if err != nil || len(cr.IPs) == 0 {
		return e, fmt.Errorf("endpoint %s: CNI result has no address: %v", name, err)
	}
	for _, c := range cr.IPs {
		ip, _ := netip.AddrFromSlice(c.Address.IP)
		if ip = ip.Unmap(); ip.Is4() {
			e.IP = ip
		} else {
			e.IP6 = ip
		}
	}
	d.eps = append(d.eps, e) // detached by teardown
	return e, nil
}

func (d *run) prove(ctx context.Context) (Result, error) {
	var res Result
	p, err := plan.Parse(demoNetwork.Spec())
	if err != nil {
		return res, err
	}
	res.Plan = p.String()
	d.say("\n== address plan\n  %s", p)
	var p6 *plan.Plan
	if d.o.DualStack {
		if p6, err = plan.Parse(demoNetwork6.Spec()); err != nil {
			return res, err
		}
		d.say("  %s   (--dual-stack: every endpoint has an address in each, same tenant and segment ids)", p6)
	}
	hosts, err := d.cli.ListHosts(ctx)
	if err != nil {
		return res, err
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	for _, t := range demoTenants {
		tt, err := d.cli.GetTenant(ctx, t.Name)
		if err != nil {
			return res, err
		}
		m, err := p.TenantMatch(tt.ID)
		if err != nil {
			return res, err
		}
		d.say("  tenant %-7s id %d  isolation %-7s  every host: addr & %s == %s", tt.Name, tt.ID, tt.Isolation, m.Mask, m.Value)
		if p6 != nil {
			m6, err := p6.TenantMatch(tt.ID)
			if err != nil {
				return res, err
			}
			d.say("  %-48s  and over IPv6: addr & %s == %s", "", m6.Mask, m6.Value)
		}
	}
	for _, h := range hosts {
		for _, s := range h.Slots {
			ip := h.IP
			if s.CIDR.Addr().Is6() && h.IP6.IsValid() {
				ip = h.IP6
			}
			d.say("  host %-3s underlay %-13s owns %s", h.Name, ip, s.CIDR)
		}
	}
	d.say("\n== endpoints")
	for _, e := range d.eps {
		if e.IP6.IsValid() {
			d.say("  %-3s %-17s %-12s %s", e.Name, e.Label(), e.IP, e.IP6)
			continue
		}
		d.say("  %-3s %-17s %s", e.Name, e.Label(), e.IP)
	}

	// Wait until every agent programmed one route per remote host and its
	// nftables table.
	d.say("\n== waiting for agents to converge")
	var reports []HostReport
	err = waitFor(ctx, 60*time.Second, 300*time.Millisecond, func() error {
		reports = reports[:0]
		for _, h := range hosts {
			r, err := d.hostReport(ctx, h)
			if err != nil {
				return err
			}
			if want := (len(hosts) - 1) * len(d.o.networks()); r.RemoteRoutes != want {
				return fmt.Errorf("host %s has %d routes to remote hosts, want %d", h.Name, r.RemoteRoutes, want)
			}
			if r.NftRules == 0 {
				return fmt.Errorf("host %s has no nftables rules yet", h.Name)
			}
			reports = append(reports, r)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("agents did not converge: %w\n%s", err, d.agentLogs())
	}
	res.Hosts = reports
	for _, r := range reports {
		d.say("\n  host %s (%s, owns %s): %d Romana routes, %d to remote hosts; nft table inet romana: %d rules, %d map/set elements",
			r.Name, r.IP, r.CIDR, len(r.Routes), r.RemoteRoutes, r.NftRules, r.NftElements)
		for _, l := range r.Routes {
			d.say("    %s", l)
		}
	}

	d.say("\n== connectivity: TCP connect to port %d and ping, every ordered pair", ProbePort)
	m, err := d.matrix(ctx)
	if err != nil {
		return res, err
	}
	res.Matrix = m
	if !d.o.JSON {
		m.Render(d.o.Out)
	}
	bad := m.Mismatches()
	for _, c := range bad {
		res.Problems = append(res.Problems, fmt.Sprintf("%s -> %s: expected %s, tcp %s, ping %s", c.From, c.To, verdict(c.Expected), verdict(c.TCP), verdict(c.Ping)))
	}
	if d.o.DualStack {
		d.say("\n== connectivity over IPv6: TCP connect to port %d and ping (ICMPv6), every ordered pair", ProbePort)
		m6, err := d.matrixFamily(ctx, true)
		if err != nil {
			return res, err
		}
		res.Matrix6 = &m6
		if !d.o.JSON {
			m6.Render(d.o.Out)
		}
		for _, c := range m6.Mismatches() {
			bad = append(bad, c)
			res.Problems = append(res.Problems, fmt.Sprintf("IPv6 %s -> %s: expected %s, tcp %s, ping %s", c.From, c.To, verdict(c.Expected), verdict(c.TCP), verdict(c.Ping)))
		}
	}
	res.OK = len(bad) == 0
	allowed, blocked := 0, 0
	for _, c := range m.Cells {
		if c.From == c.To {
			continue
		}
		if c.Expected {
			allowed++
		} else {
			blocked++
		}
	}
	if d.o.JSON {
		enc := json.NewEncoder(d.o.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return res, err
		}
	}
	if !res.OK {
		return res, fmt.Errorf("%d of %d pairs differ from the expected connectivity:\n  %s", len(bad), allowed+blocked, strings.Join(res.Problems, "\n  "))
	}
	if d.o.DualStack {
		d.say("\nPASS: %d pairs reachable and %d pairs isolated, exactly as expected, over IPv4 and over IPv6 (TCP and ICMP)", allowed, blocked)
		return res, nil
	}
	d.say("\nPASS: %d pairs reachable and %d pairs isolated, exactly as expected (TCP and ICMP)", allowed, blocked)
	return res, nil
}

func verdict(b bool) string {
	if b {
		return "allowed"
	}
	return "blocked"
}

// matrix probes every ordered pair of endpoints, a few at a time.
func (d *run) matrix(ctx context.Context) (Matrix, error) { return d.matrixFamily(ctx, false) }

// matrixFamily is matrix over the endpoints' IPv6 addresses when v6.
func (d *run) matrixFamily(ctx context.Context, v6 bool) (Matrix, error) {
	addr := func(e Endpoint) netip.Addr {
		if v6 {
			return e.IP6
		}
		return e.IP
	}
	modes := map[string]string{}
	for _, t := range demoTenants {
		modes[t.Name] = t.Isolation
	}
	for _, e := range d.eps {
		l, err := listenIn(e.NS, netip.AddrPortFrom(addr(e), ProbePort))
		if err != nil {
			return Matrix{}, err
		}
		d.mu.Lock()
		d.lsns = append(d.lsns, l)
		d.mu.Unlock()
		go serve(l)
	}
	n := len(d.eps)
	m := Matrix{Endpoints: d.eps, Cells: make([]Cell, n*n)}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, src := range d.eps {
		for j, dst := range d.eps {
			c := &m.Cells[i*n+j]
			c.From, c.To = src.Name, dst.Name
			if i == j {
				continue
			}
			c.Expected = Expect(modes, src, dst)
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				c.TCP = dialIn(src.NS, netip.AddrPortFrom(addr(dst), ProbePort), time.Second) == nil
				c.Ping = pingIn(ctx, filepath.Base(src.NS), addr(dst), time.Second)
			}()
		}
	}
	wg.Wait()
	return m, ctx.Err()
}

func (d *run) agentLogs() string {
	var b strings.Builder
	for _, a := range d.agents {
		fmt.Fprintf(&b, "%s log:\n%s", a.name, a.tail(10))
	}
	return b.String()
}

// agentUp reports whether host's agent runs: the CNI plugin forwards to it,
// so a DEL on a host whose agent was stopped (a test does that) cannot
// complete. Teardown skips those: deleting the namespaces removes their
// veths, and romanad's state goes with the demo's directory.
func (d *run) agentUp(host string) bool {
	for _, a := range d.agents {
		if a.name == "agent-"+host {
			return !a.exited()
		}
	}
	return false
}

// teardown removes everything the demo made: attachments (CNI DEL, on
// hosts whose agent runs), processes (by PID), namespaces and the state
// directory.
func (d *run) teardown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	d.mu.Lock()
	for _, l := range d.lsns {
		l.Close()
	}
	d.mu.Unlock()
	for _, e := range d.eps {
		if rt := d.attach[e.Host]; rt != nil && d.romanad != nil && !d.romanad.exited() && d.agentUp(e.Host) {
			if err := rt.Del(ctx, e.Name, e.NS, "eth0", nil); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, a := range d.agents {
		errs = append(errs, a.stop(5*time.Second))
	}
	errs = append(errs, d.romanad.stop(10*time.Second))
	if d.lab != nil {
		errs = append(errs, d.lab.Close())
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	errs = append(errs, clearState(d.o.Prefix))
	return errors.Join(errs...)
}

// withNetworks sets "networks" in a CNI network config: a dual-stack
// attachment allocates one address from each.
func withNetworks(conf []byte, networks ...string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, fmt.Errorf("cni config: %w", err)
	}
	m["networks"] = networks
	return json.Marshal(m)
}

package main

// Dual-stack end-to-end tests: the cluster of e2e_test.go with a second,
// IPv6 network (a /48 ULA with the same fields), hosts with an IPv6
// underlay address beside the IPv4 one, and every endpoint of the layout
// holding an address of each family on its one veth. Real packets over
// both families: TCP and ping, isolation, a policy with ports and ICMPv6,
// forged IPv6 sources.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// net6 is the IPv6 network: the same fields as net1 on a /48 ULA (host
// blocks are /64s).
var net6 = api.Network{Name: "net6", CIDR: "fd00:1234:5678::/48",
	Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}

// hostIP6 is host hN's IPv6 underlay address.
func hostIP6(h string) netip.Addr { return netip.MustParseAddr("fd77::" + h[1:]) }

// newDualCluster builds the lab of newCluster with net6 added, hosts with
// ip6, and every endpoint dual-stack (its IPv6 address is allocated as
// "<name>:6", on the same veth). Each host's uplink forwards IPv6 (the
// administrator's part, docs/agent.md). It starts no agent.
func newDualCluster(t *testing.T) *cluster {
	simtest.Require(t, "nft", "ping")
	ctx := context.Background()
	lab := simtest.New(t)
	srv, ctl := startRomanad(t, lab)
	c := &cluster{t: t, ctx: ctx, srv: srv, ctl: ctl, lab: lab, exe: mustExecutable(t), logDir: t.TempDir(), credDir: t.TempDir(),
		hosts: map[string]*sim.Host{}, cidrs: map[string]netip.Prefix{}, eps: map[string]*sim.Endpoint{},
		agents: map[string]*agentProc{}, resync: 300 * time.Millisecond}
	t.Cleanup(func() {
		for name := range c.agents {
			c.stopAgent(name)
		}
		if t.Failed() {
			for _, h := range []string{"h1", "h2", "h3"} {
				t.Logf("agent %s log:\n%s", h, readFile(c.logDir, h+".log"))
			}
		}
	})
	cl := c.srv.Client
	for _, n := range []api.Network{{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}, net6} {
		if _, err := cl.AddNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range []string{"h1", "h2", "h3"} {
		ip := netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)})
		h, err := c.lab.AddHost(ctx, name, netip.PrefixFrom(ip, 24))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddAddr(netip.PrefixFrom(hostIP6(name), 64)); err != nil {
			t.Fatal(err)
		}
		if err := h.ForwardIPv6Uplink(ctx); err != nil {
			t.Fatal(err)
		}
		c.hosts[name] = h
		ah, err := cl.AddHost(ctx, api.Host{Name: name, IP: ip, IP6: hostIP6(name)})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ah.Slots {
			if s.Network == "net1" {
				c.cidrs[name] = s.CIDR
			}
		}
	}
	for _, tn := range []api.Tenant{{Name: "acme"}, {Name: "beta", Isolation: api.IsolationSegment}, {Name: "open", Isolation: api.IsolationNone}} {
		if _, err := cl.AddTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []api.Segment{{Tenant: "acme", Name: "default"}, {Tenant: "beta", Name: "web"}, {Tenant: "beta", Name: "db"}, {Tenant: "open", Name: "default"}} {
		if _, err := cl.AddSegment(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range layout {
		c.addDualEndpoint(e.name, e.host, e.tenant, e.segment, true, true)
	}
	return c
}

// addDualEndpoint allocates the endpoint's addresses (IPv4 in net1 as
// name, IPv6 in net6 as name:6, both on veth rv-<name>), attaches it and
// serves TCP echo on echoPort and 8081 on each address.
func (c *cluster) addDualEndpoint(name, host, tenant, segment string, v4, v6 bool) *sim.Endpoint {
	c.t.Helper()
	iface := "rv-" + name
	var ips []netip.Addr
	for _, x := range []struct {
		on             bool
		alloc, network string
	}{{v4, name, "net1"}, {v6, name + ":6", "net6"}} {
		if !x.on {
			continue
		}
		a, err := c.srv.Client.Allocate(c.ctx, api.AddressRequest{Name: x.alloc, Host: host, Tenant: tenant, Segment: segment, Network: x.network, Interface: iface})
		if err != nil {
			c.t.Fatal(err)
		}
		ips = append(ips, a.IP)
	}
	ep, err := c.lab.AddEndpointIPs(c.ctx, c.hosts[host], name, ips, iface)
	if err != nil {
		c.t.Fatal(err)
	}
	c.eps[name] = ep
	for _, ip := range ep.IPs() {
		for _, port := range []int{echoPort, 8081} {
			c.serveEchoAt(ep, ip, port)
		}
	}
	return ep
}

// serveEchoAt runs a TCP echo server on ip:port in the endpoint until the
// test ends.
func (c *cluster) serveEchoAt(ep *sim.Endpoint, ip netip.Addr, port int) {
	var ln net.Listener
	if err := ep.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(ip, uint16(port)).String())
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				bufio.NewReader(conn).WriteTo(conn)
			}()
		}
	}()
}

// fam is an address family for probes.
type fam bool

const (
	v4 fam = true
	v6 fam = false
)

func (f fam) String() string {
	if f {
		return "v4"
	}
	return "v6"
}

// tcpFam connects from one endpoint to the other's address of family f on
// port and exchanges a line.
func (c *cluster) tcpFam(from, to string, f fam, port int) error {
	dst := c.eps[to].IPOf(bool(f))
	if !dst.IsValid() {
		return fmt.Errorf("%s has no %s address", to, f)
	}
	return c.eps[from].Do(func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, uint16(port)).String(), time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintf(conn, "hello %s\n", to); err != nil {
			return err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "hello "+to+"\n" {
			return fmt.Errorf("echo %q", line)
		}
		return nil
	})
}

// pingFam pings the other endpoint's address of family f (ICMPv6 echo for v6).
func (c *cluster) pingFam(from, to string, f fam) error {
	dst := c.eps[to].IPOf(bool(f))
	if !dst.IsValid() {
		return fmt.Errorf("%s has no %s address", to, f)
	}
	_, err := c.eps[from].Exec(c.ctx, "ping", "-c1", "-W1", dst.String())
	return err
}

// fprobe is one probe of a family: TCP to port (0: ping).
type fprobe struct {
	from, to string
	f        fam
	port     int
	ok       bool
}

func (p fprobe) String() string {
	if p.port == 0 {
		return fmt.Sprintf("ping%s %s -> %s", p.f, p.from, p.to)
	}
	return fmt.Sprintf("tcp%s %s -> %s:%d", p.f, p.from, p.to, p.port)
}

func (c *cluster) runFam(p fprobe) error {
	if p.port == 0 {
		return c.pingFam(p.from, p.to, p.f)
	}
	return c.tcpFam(p.from, p.to, p.f, p.port)
}

// checkFam runs the probes in parallel until each succeeds or fails as
// expected (a policy change takes a moment to reach the agents).
func (c *cluster) checkFam(what string, probes []fprobe) {
	c.t.Helper()
	expect.Eventually(c.t, what, wait, func() error {
		var mu sync.Mutex
		var failures []string
		var wg sync.WaitGroup
		for _, p := range probes {
			wg.Go(func() {
				err := c.runFam(p)
				if (err == nil) != p.ok {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s (%s -> %s): want ok=%v, got err=%v",
						p, c.eps[p.from].IPOf(bool(p.f)), c.eps[p.to].IPOf(bool(p.f)), p.ok, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			return fmt.Errorf("%s", strings.Join(failures, "\n"))
		}
		return nil
	})
}

// matrixFam is the connectivity matrix of e2e_test.go, TCP and ping, over
// family f.
func matrixFam(f fam) []fprobe {
	var out []fprobe
	for _, p := range matrix {
		out = append(out, fprobe{p.from, p.to, f, echoPort, p.ok}, fprobe{p.from, p.to, f, 0, p.ok})
	}
	return out
}

// ourRoutes6 returns `ip -6 route show proto 190` in the host.
func (c *cluster) ourRoutes6(host string) string {
	out, err := c.hosts[host].Exec(c.ctx, "ip", "-6", "route", "show", "proto", "190")
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func TestDualStackEndToEnd(t *testing.T) {
	c := newDualCluster(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h)
	}
	c.waitHealthy("h1", "h2", "h3")
	step := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) { c.t = t; f(t) })
		c.t = t
		if t.Failed() {
			t.FailNow()
		}
	}

	step("routes", func(t *testing.T) {
		hosts, err := c.srv.Client.ListHosts(c.ctx)
		if err != nil {
			t.Fatal(err)
		}
		wants := []string{c.eps["a1"].IPOf(false).String() + " dev rv-a1"}
		for _, h := range hosts {
			for _, s := range h.Slots {
				if s.Network == net6.Name && h.Name != "h1" {
					wants = append(wants, fmt.Sprintf("%s via %s dev eth0", s.CIDR, hostIP6(h.Name)))
				}
			}
		}
		if len(wants) != 3 {
			t.Fatalf("want routes %q", wants)
		}
		expect.Eventually(t, "IPv6 routes of h1", wait, func() error {
			got := c.ourRoutes6("h1")
			for _, want := range wants {
				if !strings.Contains(got, want) {
					return fmt.Errorf("no %q in\n%s", want, got)
				}
			}
			return nil
		})
	})

	step("matrix over IPv4 and IPv6", func(t *testing.T) {
		c.checkFam("matrix v4", matrixFam(v4))
		c.checkFam("matrix v6", matrixFam(v6))
	})

	step("IPv6-only endpoints, same host and cross host", func(t *testing.T) {
		c.addDualEndpoint("s1", "h1", "acme", "default", false, true)
		c.addDualEndpoint("s2", "h2", "beta", "web", false, true)
		c.checkFam("v6-only", []fprobe{
			{"a1", "s1", v6, echoPort, true}, {"s1", "a1b", v6, 0, true}, // same host
			{"a3", "s1", v6, echoPort, true}, {"s1", "a2", v6, 0, true}, // cross host
			{"s2", "w1", v6, echoPort, true}, {"s2", "d3", v6, echoPort, false}, // segment isolation
			{"s2", "s1", v6, echoPort, false}, {"s1", "s2", v6, 0, false}, // tenant isolation
		})
	})

	step("neighbour discovery and forwarding per interface", func(t *testing.T) {
		// The gateway answers on every veth (ND is input to the host,
		// never seen by the forward hook).
		for _, ep := range []string{"a1", "w2", "s1"} {
			if _, err := c.eps[ep].Exec(c.ctx, "ping", "-c1", "-W1", "fe80::1%eth0"); err != nil {
				t.Errorf("%s: ping fe80::1: %v", ep, err)
			}
		}
		for _, h := range []string{"h1", "h2", "h3"} {
			for key, want := range map[string]string{"net.ipv6.conf.all.forwarding": "0", "net.ipv6.conf.eth0.forwarding": "0",
				"net.ipv6.conf.eth0.accept_ra": "1", "net.ipv6.conf.rv-a1.force_forwarding": "1"} {
				if h != "h1" && strings.Contains(key, "rv-a1") {
					continue
				}
				out, err := c.hosts[h].Exec(c.ctx, "sysctl", "-n", key)
				if err != nil || strings.TrimSpace(out) != want {
					t.Errorf("%s: %s = %q (%v), want %s", h, key, out, err, want)
				}
			}
		}
	})

	step("policy with ports and ICMPv6", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "acme-to-web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{8081}}}})
		c.putPolicy(api.Policy{Name: "open-pings-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "open"}}, Protocol: "icmp", ICMPType: u8(128)}}})
		c.checkFam("policies", []fprobe{
			{"a1", "w2", v6, 8081, true}, {"a3", "w1", v6, 8081, true}, {"a1", "w2", v6, echoPort, false}, {"a1", "w2", v6, 0, false},
			{"o1", "a3", v6, 0, true}, {"o3", "a1", v6, 0, true}, {"o1", "a3", v6, echoPort, false},
			// ICMPv6 type 128 is not ICMP type 8: IPv4 pings stay isolated.
			{"o1", "a3", v4, 0, false}, {"a1", "w2", v4, 8081, true},
		})
		for _, p := range []struct {
			from, to string
			proto    string
			port     uint16
			icmp     uint8
			verdict  string
		}{{"a1", "w2", "tcp", 8081, 0, api.ActionAllow}, {"a1", "w2", "tcp", echoPort, 0, api.ActionDeny},
			{"o1", "a3", "icmp", 0, 128, api.ActionAllow}, {"o1", "a3", "icmp", 0, 8, api.ActionDeny}} {
			tr, err := c.srv.Client.PolicyTrace(c.ctx, api.TraceRequest{From: c.eps[p.from].IPOf(false), To: c.eps[p.to].IPOf(false),
				Proto: p.proto, Port: p.port, ICMPType: p.icmp})
			if err != nil || tr.Verdict != p.verdict {
				t.Errorf("trace %s -> %s %s %d/%d: %+v, %v; want %s", p.from, p.to, p.proto, p.port, p.icmp, tr, err, p.verdict)
			}
		}
		c.removeAllPolicies()
	})

	step("forged IPv6 sources dropped", func(t *testing.T) { c.spoofing6() })
	step("forged IPv6 sources from the underlay dropped", func(t *testing.T) { c.underlaySpoofing6() })
}

// underlaySpoofing6: a machine on the hosts' segment, not a host, routes
// the IPv6 pool via h1 and sends to o1 (tenant open: isolation admits
// anyone) from its own address, which arrives, and from a2's IPv6 address
// (a2 lives on h2), which passes the reverse-path check (h2's block routes
// back out of the uplink) but does not come from h2's MAC: the flat-mode
// underlay rule (set underlay-v6) drops it.
func (c *cluster) underlaySpoofing6() {
	t := c.t
	x, err := c.lab.AddController(c.ctx, "x", netip.MustParsePrefix("192.168.77.66/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := x.AddAddr(netip.MustParsePrefix("fd77::66/64")); err != nil {
		t.Fatal(err)
	}
	a2 := c.eps["a2"].IPOf(false)
	for _, args := range [][]string{
		{"ip", "-6", "route", "add", net6.CIDR, "via", hostIP6("h1").String()},
		{"ip", "-6", "addr", "add", a2.String() + "/128", "dev", "lo"},
	} {
		if out, err := x.Exec(c.ctx, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	o1 := c.eps["o1"]
	at := netip.AddrPortFrom(o1.IPOf(false), 9998)
	atO1 := listenUDP(t, o1, at.Addr(), at.Port())
	has := atO1.received
	send := func(src netip.Addr, payload string) {
		t.Helper()
		sendUDP(t, x.Namespace, src, at, payload, 1)
	}
	before := c.forwardCounter("h1", "network net6: source not from its block's host")
	for i := range 10 {
		send(a2, fmt.Sprintf("forged-%d", i))
	}
	expect.Eventually(t, "x reaches o1 from its own address", wait, func() error {
		if has("plain") {
			return nil
		}
		send(netip.MustParseAddr("fd77::66"), "plain")
		return fmt.Errorf("nothing arrived yet")
	})
	for i := range 10 {
		if has(fmt.Sprintf("forged-%d", i)) {
			t.Errorf("forged-%d from a2's address arrived at o1", i)
		}
	}
	if after := c.forwardCounter("h1", "network net6: source not from its block's host"); after-before < 10 {
		t.Errorf("h1's IPv6 underlay rule counted %d packets, want the 10 forged ones", after-before)
	}
}

// forwardCounter is the packet counter of the rule of the host's forward
// chain whose line holds match (a comment, or part of the rule).
func (c *cluster) forwardCounter(host, match string) int {
	c.t.Helper()
	out, err := c.hosts[host].Exec(c.ctx, "nft", "list", "chain", "inet", "romana", "forward")
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, match) {
			var n int
			if i := strings.Index(l, "counter packets "); i >= 0 {
				fmt.Sscanf(l[i:], "counter packets %d", &n)
				return n
			}
		}
	}
	c.t.Fatalf("no rule %q in %s's forward chain:\n%s", match, host, out)
	return 0
}

// spoofing6: w1 (beta, on h1) borrows the IPv6 addresses of a1 (acme,
// same host) and a2 (acme, h2) to send UDP to acme endpoints; anti-
// spoofing must drop them at h1, while the owners' own datagrams arrive.
func (c *cluster) spoofing6() {
	before := c.spoofDrops("h1")
	c.spoofingOver(false)
	if after := c.spoofDrops("h1"); after-before != 10 {
		c.t.Errorf("h1's IPv6 anti-spoofing rule counted %d packets, want the 10 spoofed ones", after-before)
	}
}

// spoofDrops is the packet count of the host's IPv6 reverse-path rule.
func (c *cluster) spoofDrops(host string) int {
	return c.forwardCounter(host, "ip6 saddr "+net6.CIDR+" fib saddr . iif oif missing")
}

func mustExecutable(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func readFile(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return string(b)
}

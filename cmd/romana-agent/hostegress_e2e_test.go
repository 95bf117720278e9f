package main

// Endpoint-to-host end-to-end tests: a packet from an endpoint to an
// address of its own host goes through that host's input hook, never its
// forward hook, and must meet the endpoint's egress policies there (the
// input chain of table inet romana, docs/agent.md). The dual-stack
// cluster of dualstack_e2e_test.go (real romanad, three host namespaces
// running this binary as romana-agent), its hosts serving TCP on their
// own IPv4 and IPv6 addresses, and real packets both ways: endpoint to its
// own host and to another host, host to endpoint (replies to the host's
// connections), with no egress policy, a deny, an allow naming the
// host's address ahead of the deny, an admin-tier deny, forged sources
// and IPv6 link-local ones. Every probe between a pool address and a
// host's address is also traced, and the trace must agree.

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/sim"
)

// hostPorts are the TCP ports hosts serve on their own addresses (echo).
var hostPorts = []int{echoPort, 8081}

// hprobe is a probe between an endpoint and a host's own address, over
// family f: TCP to port (0: ping). Without fromHost it goes from endpoint
// from to host to's address; with fromHost, from host from's address to
// endpoint to.
type hprobe struct {
	from, to string
	fromHost bool
	f        fam
	port     int
	ok       bool
}

func (p hprobe) String() string {
	kind := "tcp"
	if p.port == 0 {
		kind = "ping"
	}
	if p.fromHost {
		return fmt.Sprintf("%s%s host %s -> %s:%d", kind, p.f, p.from, p.to, p.port)
	}
	return fmt.Sprintf("%s%s %s -> host %s:%d", kind, p.f, p.from, p.to, p.port)
}

// hostAddr is host h's own address of family f.
func (c *cluster) hostAddr(h string, f fam) netip.Addr {
	if f == v4 {
		return c.hostIP(h)
	}
	return hostIP6(h)
}

// ends returns the probe's namespace of origin, source and destination.
func (c *cluster) ends(p hprobe) (*sim.Namespace, netip.Addr, netip.Addr) {
	if p.fromHost {
		return c.hosts[p.from].Namespace, c.hostAddr(p.from, p.f), c.eps[p.to].IPOf(bool(p.f))
	}
	return c.eps[p.from].Namespace, c.eps[p.from].IPOf(bool(p.f)), c.hostAddr(p.to, p.f)
}

// runH performs the probe; nil means it got through and back.
func (c *cluster) runH(p hprobe) error {
	ns, src, dst := c.ends(p)
	if p.port == 0 {
		_, err := ns.Exec(c.ctx, "ping", "-c1", "-W1", "-I", src.String(), dst.String())
		return err
	}
	return echoOnce(ns, src, netip.AddrPortFrom(dst, uint16(p.port)))
}

// echoOnce connects from src to dst inside ns and exchanges a line.
func echoOnce(ns *sim.Namespace, src netip.Addr, dst netip.AddrPort) error {
	return ns.Do(func() error {
		d := net.Dialer{Timeout: time.Second}
		if src.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		conn, err := d.Dial("tcp", dst.String())
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		msg := "hello " + dst.String() + "\n"
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := conn.Read(buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	})
}

// traceH asks romanad about the probe.
func (c *cluster) traceH(p hprobe) (api.Trace, error) {
	_, src, dst := c.ends(p)
	req := api.TraceRequest{From: src, To: dst, Proto: api.ProtoTCP, Port: uint16(p.port)}
	if p.port == 0 {
		req.Proto, req.ICMPType = api.ProtoICMP, 8
		if p.f == v6 {
			req.ICMPType = 128
		}
	}
	return c.srv.Client.PolicyTrace(c.ctx, req)
}

// expectH runs the probes in parallel until each does as expected and
// romanad's trace agrees, or the wait is over.
func (c *cluster) expectH(what string, probes []hprobe) {
	c.t.Helper()
	pollProbes(c.t, what, wait, probes, func(p hprobe) bool { return p.ok }, c.runH, c.traceH)
}

// both returns the probe over IPv4 and over IPv6.
func both(p hprobe) []hprobe {
	q := p
	p.f, q.f = v4, v6
	return []hprobe{p, q}
}

// probesH expands probes over both families.
func probesH(ps ...hprobe) []hprobe {
	var out []hprobe
	for _, p := range ps {
		out = append(out, both(p)...)
	}
	return out
}

// inputCounter is the packet counter of the rule of the host's input
// chain whose line holds match (0, and an error of the test, when there
// is none).
func (c *cluster) inputCounter(host, match string) int {
	c.t.Helper()
	out, err := c.hosts[host].Exec(c.ctx, "nft", "list", "chain", "inet", "romana", "input")
	if err != nil {
		c.t.Error(err) // the caller's assertions on traffic still run
		return 0
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
	c.t.Errorf("no rule %q in %s's input chain:\n%s", match, host, out)
	return 0
}

func TestEndpointToHostEndToEnd(t *testing.T) {
	c := newDualCluster(t)
	c.resync = time.Hour // changes must come from the watch stream
	for _, h := range []string{"h1", "h2", "h3"} {
		for _, f := range []fam{v4, v6} {
			for _, port := range hostPorts {
				c.serveEchoAt(&sim.Endpoint{Namespace: c.hosts[h].Namespace}, c.hostAddr(h, f), port)
			}
		}
		c.startAgent(h)
	}
	// h1 also serves on its link-local gateway address on a1's veth.
	c.serveEchoAt(&sim.Endpoint{Namespace: c.hosts["h1"].Namespace}, netip.MustParseAddr("fe80::1%rv-a1"), echoPort)
	c.waitHealthy("h1", "h2", "h3")
	for _, h := range []string{"h1", "h2", "h3"} {
		expect.Eventually(t, h+" has its input chain", wait, func() error {
			_, err := c.hosts[h].Exec(c.ctx, "nft", "list", "chain", "inet", "romana", "input")
			return err
		})
	}
	step := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) { c.t = t; f(t) })
		c.t = t
		if t.Failed() {
			t.FailNow()
		}
	}
	tcp := func(from, to string, port int, ok bool) hprobe { return hprobe{from: from, to: to, port: port, ok: ok} }
	ping := func(from, to string, ok bool) hprobe { return hprobe{from: from, to: to, ok: ok} }
	fromHost := func(from, to string, port int, ok bool) hprobe {
		return hprobe{from: from, to: to, port: port, ok: ok, fromHost: true}
	}
	linkLocal := func(ep string) error {
		return echoOnce(c.eps[ep].Namespace, netip.Addr{}, netip.MustParseAddrPort(fmt.Sprintf("[fe80::1%%eth0]:%d", echoPort)))
	}
	pingGateway := func(ep string) error {
		_, err := c.eps[ep].Exec(c.ctx, "ping", "-c1", "-W1", "fe80::1%eth0")
		return err
	}

	step("no egress policy: endpoints reach their own host and others", func(t *testing.T) {
		c.expectH("open", probesH(tcp("a1", "h1", echoPort, true), tcp("a1", "h1", 8081, true), ping("a1", "h1", true),
			tcp("a1", "h2", echoPort, true), tcp("a2", "h2", 8081, true), tcp("w1", "h1", echoPort, true),
			fromHost("h1", "a1", echoPort, true), fromHost("h1", "a1", 0, true), fromHost("h2", "a2", 8081, true)))
	})

	step("IPv6 link-local: ping of the gateway accepted, a connection dropped", func(t *testing.T) {
		for _, ep := range []string{"a1", "w1"} {
			if err := pingGateway(ep); err != nil {
				t.Errorf("%s: ping fe80::1: %v", ep, err)
			}
		}
		before := c.inputCounter("h1", "no policy can name it")
		expect.Eventually(t, "a1's link-local connection to h1 dropped", wait, func() error {
			if err := linkLocal("a1"); err == nil {
				return fmt.Errorf("a1 connected to h1's [fe80::1]:%d, a link-local source no policy can name", echoPort)
			}
			return nil
		})
		if after := c.inputCounter("h1", "no policy can name it"); after <= before {
			t.Errorf("h1's link-local rule counted %d packets, want more than %d", after, before)
		}
	})

	step("egress deny to the hosts' addresses", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "acme-no-hosts", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{CIDR: "192.168.77.0/24"}, {CIDR: "fd77::/64"}}}}})
		c.expectH("deny", probesH(
			// Its own host: the input hook (the defect of issue 13).
			tcp("a1", "h1", echoPort, false), tcp("a1b", "h1", 8081, false), ping("a1", "h1", false), tcp("a2", "h2", echoPort, false),
			// Another host: the forward hook, as before.
			tcp("a1", "h2", echoPort, false), tcp("a3", "h1", 8081, false),
			// Not acme: no egress policy.
			tcp("w1", "h1", echoPort, true), tcp("o3", "h3", 8081, true), ping("d2", "h2", true),
			// The host's own connections: replies are established.
			fromHost("h1", "a1", echoPort, true), fromHost("h1", "a1b", 8081, true), fromHost("h2", "a2", 0, true)))
		if err := pingGateway("a1"); err != nil {
			t.Errorf("a1: ping fe80::1 under the deny: %v", err)
		}
	})

	step("deny of every destination: host connections and neighbour discovery still work", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "acme-no-hosts", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{Any: true}}}}})
		c.expectH("deny all", probesH(tcp("a1", "h1", echoPort, false), ping("a1b", "h1", false)))
		// a1 forgets its gateway's link-layer address and must solicit
		// fe80::1 again, from its own address (which the policy denies
		// everything) to send anything.
		a1 := c.eps["a1"]
		if out, err := a1.Exec(c.ctx, "ip", "-6", "neigh", "flush", "dev", "eth0"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		expect.Eventually(t, "a1 resolves its gateway fe80::1 under a deny of everything", wait, func() error {
			a1.Exec(c.ctx, "ping", "-c1", "-W1", "-I", a1.IPOf(false).String(), hostIP6("h1").String()) // denied; it solicits first
			out, err := a1.Exec(c.ctx, "ip", "-6", "neigh", "show", "fe80::1", "dev", "eth0")
			if err != nil || !strings.Contains(out, "lladdr") {
				return fmt.Errorf("neighbour entry %q, %v", strings.TrimSpace(out), err)
			}
			return nil
		})
		c.expectH("host to endpoint under a deny of everything", probesH(fromHost("h1", "a1", echoPort, true), fromHost("h1", "a1b", 0, true)))
	})

	step("an allow naming the host's address, ahead of the deny", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "acme-to-h1", Priority: 5, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{CIDR: c.hostIP("h1").String() + "/32"}, {CIDR: hostIP6("h1").String() + "/128"}},
				Protocol: "tcp", Ports: []uint16{echoPort}}}})
		c.expectH("allow h1", probesH(tcp("a1", "h1", echoPort, true), tcp("a1b", "h1", echoPort, true), tcp("a2", "h1", echoPort, true),
			tcp("a1", "h1", 8081, false), ping("a1", "h1", false), tcp("a2", "h2", echoPort, false), tcp("a1", "h2", echoPort, false)))
	})

	step("an admin-tier deny of the hosts' addresses beats the default tier's allow", func(t *testing.T) {
		c.removePolicy("acme-no-hosts")
		c.putPolicy(api.Policy{Name: "admin-no-h1", Tier: api.TierAdmin, Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{Host: "h1"}}, Protocol: "tcp", Ports: []uint16{echoPort}}}})
		c.expectH("admin deny", probesH(tcp("a1", "h1", echoPort, false), tcp("w1", "h1", echoPort, false), tcp("a3", "h1", echoPort, false),
			tcp("w1", "h1", 8081, true), tcp("a1", "h2", echoPort, true), tcp("a2", "h2", 8081, true), fromHost("h1", "w1", echoPort, true)))
	})

	step("no policy left: open again", func(t *testing.T) {
		c.removeAllPolicies()
		c.expectH("open again", probesH(tcp("a1", "h1", echoPort, true), ping("a1", "h1", true), tcp("a2", "h1", 8081, true)))
	})

	step("forged sources from an endpoint to its host dropped", func(t *testing.T) {
		for _, f := range []fam{v4, v6} {
			c.forgedToHost(f)
		}
	})
}

// forgedToHost: a1 (on h1) sends UDP to h1's own address of family f from
// addresses that are not its own: a1b's (same host), a2's (another
// host's block), an unused address of h1's block and one outside every
// pool (on the hosts' subnet). The input chain's reverse-path rule must
// drop all of them; a1's own datagrams, sent after on the same path, are
// the barrier.
func (c *cluster) forgedToHost(f fam) {
	t := c.t
	ip, bits, nodad, outside := []string{"ip"}, 32, []string{}, "192.168.77.99"
	if f == v6 {
		ip, bits, nodad, outside = []string{"ip", "-6"}, 128, []string{"nodad"}, "fd77::99"
	}
	a1 := c.eps["a1"]
	own := a1.IPOf(bool(f))
	dst := netip.AddrPortFrom(c.hostAddr("h1", f), 9999)
	sink := listenUDP(t, &sim.Endpoint{Namespace: c.hosts["h1"].Namespace}, dst.Addr(), dst.Port())
	// An address of h1's block next to a1's, which no endpoint holds.
	b := own.AsSlice()
	b[len(b)-1] ^= 0x7f
	unused, _ := netip.AddrFromSlice(b)
	forged := []netip.Addr{c.eps["a1b"].IPOf(bool(f)), c.eps["a2"].IPOf(bool(f)), unused, netip.MustParseAddr(outside)}
	for _, x := range forged {
		if x == own || !x.IsValid() {
			t.Fatalf("forged source %s: not another address", x)
		}
	}
	before := c.inputCounter("h1", "spoofed source")
	for _, src := range forged {
		pfx := netip.PrefixFrom(src, bits).String()
		if out, err := a1.Exec(c.ctx, append(append(slices.Clone(ip), "addr", "add", pfx, "dev", "eth0"), nodad...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		sendUDP(t, a1.Namespace, src, dst, "forged", 5)
		if out, err := a1.Exec(c.ctx, append(slices.Clone(ip), "addr", "del", pfx, "dev", "eth0")...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	sendUDP(t, a1.Namespace, own, dst, "real", 5)
	expect.Eventually(t, fmt.Sprintf("a1's own datagrams reach h1 (%s)", f), wait, func() error {
		if n := sink.count(own, "real"); n != 5 {
			return fmt.Errorf("%d of 5 arrived", n)
		}
		return nil
	})
	for _, src := range forged {
		if n := sink.count(src, "forged"); n != 0 {
			t.Errorf("%s: h1 got %d datagrams from a1 posing as %s", f, n, src)
		}
	}
	if after := c.inputCounter("h1", "spoofed source"); after-before < 5*len(forged) {
		t.Errorf("%s: h1's input anti-spoofing rule counted %d packets, want the %d forged ones", f, after-before, 5*len(forged))
	}
}

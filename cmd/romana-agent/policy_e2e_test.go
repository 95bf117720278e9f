package main

// Policy end-to-end tests: the cluster of e2e_test.go (real romanad, three
// host namespaces running this binary as romana-agent, ten endpoints),
// policies put through the API, and real traffic: TCP connects on several
// ports, UDP datagrams and pings. Agents run with a resync interval of an
// hour, so every change must arrive through the watch stream. Every probe
// is also traced (GET /v1/policy/trace) and the trace must agree.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/sim"
)

// Extra services on every endpoint: TCP echo on these ports (besides
// echoPort) and a UDP echo on udpPort.
var extraTCP = []uint16{8081, 9000}

const udpPort = 5353

// pprobe is one probe: kind "tcp" (port), "udp" (port) or "ping", from an
// endpoint (or, with fromHost, a host's own namespace) to an endpoint (or,
// with toHost, a host's underlay address, where newPolicyCluster serves
// the same ports).
type pprobe struct {
	kind     string
	from, to string
	port     uint16
	ok       bool
	fromHost bool
	toHost   bool
}

func (p pprobe) String() string {
	from, to := p.from, p.to
	if p.fromHost {
		from = "host " + from
	}
	if p.toHost {
		to = "host " + to
	}
	s := fmt.Sprintf("%s %s -> %s", p.kind, from, to)
	if p.port != 0 {
		s += fmt.Sprintf(":%d", p.port)
	}
	return s
}

func (c *cluster) serveUDP(ep *sim.Endpoint) { c.serveUDPAt(ep.Namespace, ep.IP) }

// serveEchoHost runs a TCP echo server on host h's own address and port
// until the test ends.
func (c *cluster) serveEchoHost(h string, port uint16) {
	c.serveEchoAt(&sim.Endpoint{Namespace: c.hosts[h].Namespace}, c.hostIP(h), int(port))
}

// serveUDPAt runs a UDP echo server on ip:udpPort inside ns until the
// test ends.
func (c *cluster) serveUDPAt(ns *sim.Namespace, ip netip.Addr) {
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(ip, udpPort).String())
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
}

// probeDst is the probe's destination address.
func (c *cluster) probeDst(p pprobe) netip.Addr {
	if p.toHost {
		return c.hostIP(p.to)
	}
	return c.eps[p.to].IP
}

// run performs one probe; nil means the traffic got through (and back).
func (c *cluster) run(p pprobe) error {
	dst := c.probeDst(p)
	var from *sim.Namespace
	if p.fromHost {
		from = c.hosts[p.from].Namespace
	} else {
		from = c.eps[p.from].Namespace
	}
	switch p.kind {
	case "ping":
		_, err := from.Exec(c.ctx, "ping", "-c1", "-W1", dst.String())
		return err
	case "tcp", "udp":
		return from.Do(func() error {
			conn, err := net.DialTimeout(p.kind, fmt.Sprintf("%s:%d", dst, p.port), time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Second))
			msg := "hi " + p.to
			if _, err := conn.Write([]byte(msg)); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := conn.Read(buf)
			if err != nil {
				return err
			}
			if string(buf[:n]) != msg {
				return fmt.Errorf("echo %q", buf[:n])
			}
			return nil
		})
	}
	return fmt.Errorf("unknown probe kind %q", p.kind)
}

// trace asks romanad about the probe.
func (c *cluster) trace(p pprobe) (api.Trace, error) {
	var src netip.Addr
	if p.fromHost {
		src = c.hostIP(p.from)
	} else {
		src = c.eps[p.from].IP
	}
	req := api.TraceRequest{From: src, To: c.probeDst(p), Proto: p.kind, Port: p.port}
	if p.kind == "ping" {
		req.Proto, req.ICMPType = api.ProtoICMP, 8
	}
	return c.srv.Client.PolicyTrace(c.ctx, req)
}

func (c *cluster) hostIP(h string) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 168, 77, byte(h[1] - '0')})
}

// expect runs the probes (in parallel) until each succeeds or fails as
// expected and romanad's trace agrees with it, or a deadline passes. It
// returns how long it took.
func (c *cluster) expect(what string, probes []pprobe) time.Duration {
	c.t.Helper()
	return pollProbes(c.t, what, 20*time.Second, probes, func(p pprobe) bool { return p.ok }, c.run, c.trace)
}

// pollProbes runs the probes in parallel until each gives want(p) (an
// error from run is a refused probe) and trace agrees with it, probing
// again only those that did not, or fails t after timeout. It returns
// how long it took.
func pollProbes[P fmt.Stringer](t testing.TB, what string, timeout time.Duration, probes []P, want func(P) bool,
	run func(P) error, trace func(P) (api.Trace, error)) time.Duration {
	t.Helper()
	start := time.Now()
	pending := probes
	err := expect.Poll(timeout, func() error {
		var mu sync.Mutex
		var failed []P
		var why []string
		var wg sync.WaitGroup
		for _, p := range pending {
			wg.Go(func() {
				err := run(p)
				tr, terr := trace(p)
				bad := ""
				switch {
				case (err == nil) != want(p):
					bad = fmt.Sprintf("%s: want ok=%v, got %v", p, want(p), err)
				case terr != nil:
					bad = fmt.Sprintf("%s: trace: %v", p, terr)
				case (tr.Verdict == api.ActionAllow) != want(p):
					bad = fmt.Sprintf("%s: traffic ok=%v but trace says %s (%s)", p, want(p), tr.Verdict, tr.Decision.Reason)
				}
				if bad != "" {
					mu.Lock()
					failed = append(failed, p)
					why = append(why, bad)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(failed) == 0 {
			return nil
		}
		pending = failed
		slices.Sort(why)
		return errors.New(strings.Join(why, "\n"))
	})
	if err != nil {
		t.Fatalf("%s: after %v:\n%v", what, time.Since(start).Round(time.Millisecond), err)
	}
	return time.Since(start)
}

func (c *cluster) putPolicy(p api.Policy) {
	c.t.Helper()
	if _, err := c.srv.Client.PutPolicy(c.ctx, p); err != nil {
		c.t.Fatalf("put policy %s: %v", p.Name, err)
	}
}

func (c *cluster) removePolicy(name string) {
	c.t.Helper()
	if err := c.srv.Client.RemovePolicy(c.ctx, name); err != nil {
		c.t.Fatalf("remove policy %s: %v", name, err)
	}
}

func (c *cluster) removeAllPolicies() {
	c.t.Helper()
	ps, err := c.srv.Client.ListPolicies(c.ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, p := range ps {
		c.removePolicy(p.Name)
	}
}

func u8(v uint8) *uint8 { return &v }

func newPolicyCluster(t *testing.T) *cluster {
	c := newCluster(t)
	c.resync = time.Hour // changes must come from the watch stream
	for _, ep := range c.eps {
		for _, port := range extraTCP {
			c.serveEcho(ep, int(port))
		}
		c.serveUDP(ep)
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		// The host serves the endpoints' ports too, on its own address.
		for _, port := range append([]uint16{echoPort}, extraTCP...) {
			c.serveEchoHost(h, port)
		}
		c.serveUDPAt(c.hosts[h].Namespace, c.hostIP(h))
		c.startAgent(h, "--stats-interval", "200ms")
	}
	c.waitHealthy("h1", "h2", "h3")
	c.waitRoutes("h1", "h2", "h3")
	return c
}

func TestPolicyEndToEnd(t *testing.T) {
	c := newPolicyCluster(t)
	tcp := func(from, to string, port uint16, ok bool) pprobe {
		return pprobe{kind: "tcp", from: from, to: to, port: port, ok: ok}
	}
	udp := func(from, to string, ok bool) pprobe {
		return pprobe{kind: "udp", from: from, to: to, port: udpPort, ok: ok}
	}
	ping := func(from, to string, ok bool) pprobe { return pprobe{kind: "ping", from: from, to: to, ok: ok} }
	step := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) { c.t = t; f(t) })
		c.t = t
		if t.Failed() {
			t.FailNow()
		}
	}

	step("isolation before policies", func(t *testing.T) {
		c.expect("baseline", []pprobe{tcp("a1", "w2", 8081, false), udp("w1", "d2", false), tcp("w1", "a2", 9000, false),
			ping("o1", "a3", false), tcp("a2", "d3", echoPort, false), ping("o3", "w2", false), tcp("a1", "o3", echoPort, true),
			tcp("a1", "a2", echoPort, true)})
	})

	step("ingress: tenant peer, tcp port", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "acme-to-web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{8081}}}})
		took := c.expect("acme-to-web", []pprobe{tcp("a1", "w2", 8081, true), tcp("a3", "w1", 8081, true), tcp("a1", "w1", 8081, true),
			tcp("a1", "w2", echoPort, false), tcp("o1", "w2", 8081, false), ping("a1", "w2", false), tcp("a1", "d2", 8081, false)})
		t.Logf("enforced on h1 and h2 within %v of the API call", took.Round(time.Millisecond))
	})

	step("ingress: tenant+segment peer, udp port", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "web-to-db-dns", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "db"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta", Segment: "web"}}, Protocol: "udp", Ports: []uint16{udpPort}}}})
		c.expect("web-to-db-dns", []pprobe{udp("w1", "d2", true), udp("w2", "d3", true), tcp("w1", "d2", echoPort, false),
			udp("a1", "d2", false), udp("d2", "w1", false)})
	})

	step("ingress: port range", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "beta-to-acme-range", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", PortRanges: []string{"8990-9010"}}}})
		c.expect("range", []pprobe{tcp("w1", "a2", 9000, true), tcp("d3", "a1", 9000, true), tcp("w1", "a2", 8081, false),
			tcp("w1", "a2", echoPort, false), tcp("o1", "a2", 9000, false)})
	})

	step("ingress: icmp type", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "open-pings-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "open"}}, Protocol: "icmp", ICMPType: u8(8), ICMPCode: u8(0)}}})
		c.expect("icmp", []pprobe{ping("o1", "a3", true), ping("o3", "a1", true), tcp("o1", "a3", echoPort, false), udp("o1", "a3", false)})
	})

	step("ingress: host peer (its block and its own address)", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "h1-to-db", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "db"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Host: "h1"}}}}})
		c.expect("host peer", []pprobe{tcp("a1", "d3", echoPort, true), ping("o1", "d2", true), udp("w1", "d3", true),
			{kind: "ping", from: "h1", to: "d3", ok: true, fromHost: true}, {kind: "ping", from: "h2", to: "d3", ok: false, fromHost: true},
			tcp("a2", "d3", echoPort, false), ping("a3", "d2", false)})
	})

	step("ingress: cidr peer with except", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "h2-but-w2-to-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{CIDR: c.cidrs["h2"].String(), Except: []string{c.eps["w2"].IP.String() + "/32"}}}, Protocol: "tcp", Ports: []uint16{echoPort}}}})
		c.expect("cidr except", []pprobe{tcp("d2", "a3", echoPort, true), tcp("d2", "a1", echoPort, true), tcp("w2", "a3", echoPort, false),
			tcp("d3", "a1", echoPort, false)})
	})

	step("ingress: any peer, any protocol", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "web-open", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Any: true}}}}})
		c.expect("any", []pprobe{tcp("o3", "w2", echoPort, true), ping("a3", "w1", true), udp("d3", "w2", true), tcp("a2", "d2", echoPort, false)})
	})

	step("egress deny, and deny precedence over a lower-priority allow", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "acme-no-open-tcp", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}}, Log: true,
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{Tenant: "open"}}, Protocol: "tcp"}}})
		c.putPolicy(api.Policy{Name: "no-ssh-like", Priority: 20, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{8081}}}})
		c.expect("deny", []pprobe{tcp("a1", "o3", echoPort, false), tcp("a1", "o1", echoPort, false), ping("a1", "o3", true),
			tcp("w1", "o3", echoPort, true), tcp("a1", "w2", 8081, false), tcp("a3", "w1", 8081, false), tcp("a1", "w2", echoPort, true)})
		// acme's egress chain, reached through the egress stage's dispatch.
		if out, err := c.hosts["h1"].Exec(c.ctx, "nft", "list", "table", "inet", "romana"); err != nil ||
			!regexp.MustCompile(`(?s)chain policy-egress\.net1\.t\d+ \{[^}]*log prefix "romana:acme-no-open-tcp:"`).MatchString(out) {
			t.Fatalf("h1's egress chain of acme has no log rule for acme-no-open-tcp: %v\n%s", err, out)
		}
		tr, err := c.trace(tcp("a1", "w2", 8081, false))
		if err != nil || tr.Decision.Policy != "no-ssh-like" || tr.Decision.Rule == nil || *tr.Decision.Rule != 0 || tr.Decision.Host != "h2" {
			t.Fatalf("trace names %+v, %v; want policy no-ssh-like rule 0 on h2", tr.Decision, err)
		}
	})

	step("update of a live policy", func(t *testing.T) {
		// The deny drops below the allows: web-open (1000) now decides.
		c.putPolicy(api.Policy{Name: "no-ssh-like", Priority: 2000, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{8081}}}})
		took := c.expect("lowered deny", []pprobe{tcp("a1", "w2", 8081, true), tcp("a3", "w1", 8081, true)})
		t.Logf("update enforced within %v", took.Round(time.Millisecond))
		// Narrow web-open to udp only.
		c.putPolicy(api.Policy{Name: "web-open", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Any: true}}, Protocol: "udp"}}})
		c.expect("web-open narrowed", []pprobe{tcp("o3", "w2", echoPort, false), udp("o3", "w2", true), tcp("a1", "w2", 8081, true)})
	})

	step("delete of a live policy", func(t *testing.T) {
		c.removePolicy("acme-to-web")
		c.removePolicy("no-ssh-like")
		took := c.expect("deleted", []pprobe{tcp("a1", "w2", 8081, false), udp("o3", "w2", true)})
		t.Logf("delete enforced within %v", took.Round(time.Millisecond))
		c.removeAllPolicies()
		c.expect("all deleted", []pprobe{udp("o3", "w2", false), tcp("a1", "o3", echoPort, true), tcp("d2", "a3", echoPort, false),
			ping("o1", "a3", false), udp("w1", "d2", false)})
		for _, h := range []string{"h1", "h2", "h3"} {
			out, err := c.hosts[h].Exec(c.ctx, "nft", "list", "table", "inet", "romana")
			if err != nil || strings.Contains(out, "policy-") {
				t.Fatalf("%s: policy chains left: %v\n%s", h, err, out)
			}
		}
	})

	step("stats", func(t *testing.T) {
		c.putPolicy(api.Policy{Name: "counted", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "udp"}, {Peers: []api.Peer{{Tenant: "open"}}, Protocol: "tcp"}}})
		c.expect("counted", []pprobe{tcp("o1", "a2", echoPort, true), udp("w1", "a2", false)})
		expect.Eventually(t, "h2 reports counters of policy counted", wait, func() error {
			// (The first probes may have met isolation before the policy
			// was applied; these meet the policy.)
			c.run(udp("w1", "a2", false))
			c.run(tcp("o1", "a2", echoPort, true))
			st, err := c.srv.Client.PolicyStats(c.ctx)
			if err != nil {
				return err
			}
			var deny, allow uint64
			for _, h := range st {
				for _, x := range h.Counters {
					if h.Host == "h2" && x.Policy == "counted" {
						if x.Rule == 0 {
							deny += x.Packets
						} else {
							allow += x.Packets
						}
					}
				}
			}
			if deny == 0 || allow == 0 {
				return fmt.Errorf("%+v", st)
			}
			return nil
		})
		c.removeAllPolicies()
	})

	step("randomized: trace agrees with traffic", func(t *testing.T) {
		c.randomized(t)
	})
}

// randomized puts random policies and checks, for every ordered pair of
// endpoints and every pair of an endpoint and a host's address (its own
// host's: the input hook; another's: the forward hook), that one random
// probe does what the trace says.
func (c *cluster) randomized(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	tenants := map[string][]string{"acme": {"default"}, "beta": {"web", "db"}, "open": {"default"}}
	tnames := []string{"acme", "beta", "open"}
	hosts := []string{"h1", "h2", "h3"}
	var names []string
	for _, e := range layout {
		names = append(names, e.name)
	}
	selector := func() api.Selector {
		switch r.IntN(4) {
		case 0:
			return api.Selector{All: true}
		case 1:
			return api.Selector{Host: hosts[r.IntN(3)]}
		case 2:
			tn := tnames[r.IntN(3)]
			return api.Selector{Tenant: tn, Segment: tenants[tn][r.IntN(len(tenants[tn]))]}
		}
		return api.Selector{Tenant: tnames[r.IntN(3)]}
	}
	peer := func() api.Peer {
		switch r.IntN(8) {
		case 0:
			return api.Peer{Any: true}
		case 6:
			return api.Peer{CIDR: "192.168.77.0/24"} // every host's address
		case 7:
			return api.Peer{CIDR: c.hostIP(hosts[r.IntN(3)]).String() + "/32"}
		case 1:
			h := hosts[r.IntN(3)]
			p := api.Peer{CIDR: c.cidrs[h].String()}
			var inside []string
			for _, e := range layout {
				if e.host == h {
					inside = append(inside, e.name)
				}
			}
			if r.IntN(2) == 0 {
				p.Except = []string{c.eps[inside[r.IntN(len(inside))]].IP.String() + "/32"}
			}
			return p
		case 2:
			return api.Peer{Host: hosts[r.IntN(3)]}
		case 3:
			tn := tnames[r.IntN(3)]
			return api.Peer{Tenant: tn, Segment: tenants[tn][r.IntN(len(tenants[tn]))]}
		}
		return api.Peer{Tenant: tnames[r.IntN(3)]}
	}
	rule := func() api.Rule {
		ru := api.Rule{Peers: []api.Peer{peer()}}
		if r.IntN(3) == 0 {
			ru.Action = api.ActionDeny
		}
		switch r.IntN(6) {
		case 0:
			ru.Protocol, ru.Ports = "tcp", []uint16{[]uint16{echoPort, 8081, 9000}[r.IntN(3)]}
		case 1:
			ru.Protocol, ru.PortRanges = "tcp", []string{"8000-9000"}
		case 2:
			ru.Protocol, ru.Ports = "udp", []uint16{udpPort}
		case 3:
			ru.Protocol, ru.ICMPType = "icmp", u8(8)
		case 4:
			ru.Protocol = "tcp"
		}
		return ru
	}
	probe := func(from, to string) pprobe {
		switch r.IntN(5) {
		case 0:
			return pprobe{kind: "ping", from: from, to: to}
		case 1:
			return pprobe{kind: "udp", from: from, to: to, port: udpPort}
		}
		return pprobe{kind: "tcp", from: from, to: to, port: []uint16{echoPort, 8081, 9000}[r.IntN(3)]}
	}
	toHosts, toOwnHost := 0, 0
	hostOf := map[string]string{}
	for _, e := range layout {
		hostOf[e.name] = e.host
	}
	for round := 0; round < 3; round++ {
		c.removeAllPolicies()
		var ps []api.Policy
		for i := 0; i < 2+r.IntN(4); i++ {
			p := api.Policy{Name: fmt.Sprintf("r%d-%d", round, i), Priority: []int{100, 500, 1000}[r.IntN(3)],
				Direction: [][]string{{"ingress"}, {"egress"}, {"ingress", "egress"}}[r.IntN(3)],
				AppliedTo: []api.Selector{selector()}}
			for j := 0; j < 1+r.IntN(3); j++ {
				p.Rules = append(p.Rules, rule())
			}
			ps = append(ps, p)
			c.putPolicy(p)
		}
		// The expectation of each probe is the trace's; expect() then
		// retries until traffic agrees (agents converge) or fails.
		var probes []pprobe
		allowed := 0
		for _, from := range names {
			for _, to := range names {
				if from == to {
					continue
				}
				p := probe(from, to)
				tr, err := c.trace(p)
				if err != nil {
					t.Fatal(err)
				}
				p.ok = tr.Verdict == api.ActionAllow
				if p.ok {
					allowed++
				}
				probes = append(probes, p)
			}
			for _, h := range hosts {
				p := probe(from, h)
				p.toHost = true
				tr, err := c.trace(p)
				if err != nil {
					t.Fatal(err)
				}
				p.ok = tr.Verdict == api.ActionAllow
				if p.ok {
					allowed++
				} else if hostOf[from] == h {
					toOwnHost++
				} else {
					toHosts++
				}
				probes = append(probes, p)
			}
		}
		t.Logf("round %d: %d policies, %d probes (%d to hosts' addresses), %d allowed by trace", round, len(ps), len(probes), len(names)*len(hosts), allowed)
		if t.Failed() {
			return
		}
		func() {
			defer func() {
				if t.Failed() {
					for _, p := range ps {
						t.Logf("policy %+v", p)
					}
				}
			}()
			c.expect(fmt.Sprintf("round %d (seed %d)", round, seed), probes)
		}()
	}
	t.Logf("probes to a host's address denied by the trace (and dropped): %d to the source's own host (input hook), %d to another host", toOwnHost, toHosts)
	c.removeAllPolicies()
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// Namespace tests: agents run in this process, each inside its host's
// namespace of a lab, on the real route and firewall adapters and the
// netlink underlay (Config.Underlay nil), fed by a fake romanad. They
// assert what the kernel has and which packets arrive.

// runIn runs an agent for host inside h's namespace until the test ends.
func runIn(t *testing.T, h *sim.Host, host string, src Source, m *Metrics) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- h.Do(func() error {
			routes, err := route.New(nil)
			if err != nil {
				return err
			}
			fw, err := firewall.New(nil)
			if err != nil {
				return err
			}
			return Run(ctx, Config{Host: host, Resync: 200 * time.Millisecond, Source: src, Routes: routes, Firewall: fw, Metrics: m,
				MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent on %s: %v", host, err)
		}
	})
}

// labWorld is a world whose hosts h1..hn sit at 192.168.<subnet>.i/24 in lab.
func labWorld(t *testing.T, lab *sim.Lab, subnet byte, n int) (*world, []*sim.Host) {
	t.Helper()
	w := newWorld()
	w.snap.Hosts = nil
	var hosts []*sim.Host
	for i := 1; i <= n; i++ {
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, subnet, byte(i)}), 24)
		h, err := lab.AddHost(context.Background(), fmt.Sprintf("h%d", i), addr)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
		ah := w.host(h.Name, uint64(i))
		ah.IP = addr.Addr()
		w.snap.Hosts = append(w.snap.Hosts, ah)
	}
	return w, hosts
}

// ourRoutes lists the routes tagged with route.Protocol in h's main table.
func ourRoutes(t *testing.T, h *sim.Host) []string {
	t.Helper()
	out, err := h.Exec(context.Background(), "ip", "-4", "route", "show", "proto", fmt.Sprint(route.Protocol))
	if err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			rs = append(rs, l)
		}
	}
	return rs
}

// A hostile store (hosts at loopback, inside the pool, off the underlay;
// endpoints on eth0 and lo; a pool of half the internet) installs nothing
// of it on a real host: only the good endpoint's and the good host's
// routes are there, and the rest is reported.
func TestHostileStoreInstallsNothing(t *testing.T) {
	simtest.Require(t, "nft")
	lab := simtest.New(t)
	w, hosts := labWorld(t, lab, 82, 2)
	h1 := hosts[0]
	good := w.address("e1", 1, "acme", 1, 1, "rv-e1")
	if _, err := lab.AddEndpoint(context.Background(), h1, "e1", good.IP, "rv-e1"); err != nil {
		t.Fatal(err)
	}
	for i, ip := range []string{"127.0.0.1", "10.1.16.9", "203.0.113.5", "169.254.1.1", "224.0.0.5"} {
		h := w.host(fmt.Sprintf("evil%d", i), uint64(10+i))
		h.IP = netip.MustParseAddr(ip)
		w.snap.Hosts = append(w.snap.Hosts, h)
	}
	w.snap.Networks = append(w.snap.Networks, api.Network{Name: "half", CIDR: "128.0.0.0/1", Fields: w.snap.Networks[0].Fields})
	w.snap.Hosts[1].Slots = append(w.snap.Hosts[1].Slots, api.HostSlot{Network: "half", Loc: w.snap.Hosts[1].Slots[0].Loc, CIDR: netip.MustParsePrefix("130.0.0.0/16")})
	w.snap.Addresses = []api.Address{good, w.address("bad1", 1, "acme", 1, 2, "eth0"), w.address("bad2", 1, "acme", 1, 3, "lo")}
	src := newFakeSource(w.snap)
	m := NewMetrics(prometheus.NewRegistry())
	runIn(t, h1, "h1", src, m)

	want := []string{good.IP.String() + " dev rv-e1 scope link", "10.2.0.0/16 via 192.168.82.2 dev eth0"}
	expect.Eventually(t, "good routes installed", within, func() error {
		got := ourRoutes(t, h1)
		for _, w := range want {
			if !slices.ContainsFunc(got, func(r string) bool { return strings.HasPrefix(r, w) }) {
				return fmt.Errorf("routes %q", got)
			}
		}
		if refused := m.Status().RoutesRefused; len(refused) != 7 {
			return fmt.Errorf("refused %q", refused)
		}
		return nil
	})
	if got := ourRoutes(t, h1); len(got) != len(want) {
		t.Fatalf("routes with proto %d: %q; want only %q", route.Protocol, got, want)
	}
	all, err := h1.Exec(context.Background(), "ip", "route", "show", "table", "all")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(all, "\n") {
		if strings.Contains(l, "proto kernel") {
			continue // the kernel's own local and connected routes
		}
		for _, bad := range []string{"127.0.0.1", "10.1.16.9 ", "203.0.113.5", "224.0.0.5", "130.0.0.0", "10.1.16.2 ", "10.1.16.3 "} {
			if strings.Contains(l, bad) {
				t.Errorf("%s appears in the host's route %q", bad, l)
			}
		}
	}
	if p := strings.Join(m.Status().Problems, "\n"); !strings.Contains(p, `network "half": pool 128.0.0.0/1 is too wide`) {
		t.Errorf("problems: %s", p)
	}
}

// listenUDP collects the payloads arriving at ep:port.
type udpSink struct {
	mu   sync.Mutex
	got  []string
	conn net.PacketConn
}

func listenUDP(t *testing.T, ns *sim.Namespace, addr netip.AddrPort) *udpSink {
	t.Helper()
	s := &udpSink{}
	if err := ns.Do(func() (err error) { s.conn, err = net.ListenPacket("udp", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := s.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *udpSink) has(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.got, func(p string) bool { return strings.HasPrefix(p, prefix) })
}

// sendUDP sends payload from src to dst from inside ns.
func sendUDP(ns *sim.Namespace, src netip.Addr, dst netip.AddrPort, payload string) error {
	return ns.Do(func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IP(src.AsSlice())}, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(payload))
		return err
	})
}

// Flat mode on a real L2 fabric: h2's endpoint reaches h1's; a third
// machine on the fabric forging a source from h2's block, or from an
// unallocated address of h1's own block, is dropped; the same machine
// sending from its own address gets through (the path works: only the
// forged source is stopped).
func TestUnderlaySpoofingDropped(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	w, hosts := labWorld(t, lab, 83, 2)
	h1, h2 := hosts[0], hosts[1]
	w.snap.Tenants = append(w.snap.Tenants, api.Tenant{Name: "open", ID: 3, Isolation: api.IsolationNone})
	w.snap.Segments = append(w.snap.Segments, api.Segment{Tenant: "open", Name: "default", ID: 0})
	a1 := w.address("e1", 1, "open", 3, 1, "rv-e1")
	a2 := w.address("e2", 2, "open", 3, 1, "rv-e2")
	w.snap.Addresses = []api.Address{a1, a2}
	e1, err := lab.AddEndpoint(ctx, h1, "e1", a1.IP, "rv-e1")
	if err != nil {
		t.Fatal(err)
	}
	e2, err := lab.AddEndpoint(ctx, h2, "e2", a2.IP, "rv-e2")
	if err != nil {
		t.Fatal(err)
	}
	x, err := lab.AddController(ctx, "x", netip.MustParsePrefix("192.168.83.66/24"))
	if err != nil {
		t.Fatal(err)
	}
	src := newFakeSource(w.snap)
	m1 := NewMetrics(prometheus.NewRegistry())
	runIn(t, h1, "h1", src, m1)
	runIn(t, h2, "h2", src, NewMetrics(prometheus.NewRegistry()))

	// Before any packet between the hosts, each agent has had the kernel
	// resolve the other's MAC (NTF_USE): nothing is left unresolved.
	expect.Eventually(t, "h2's MAC resolved on h1 without traffic", within, func() error {
		if st := m1.Status(); st.Revision == 0 || len(st.NeighborsUnresolved) != 0 || len(st.RoutesRefused) != 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if out, err := h1.Exec(ctx, "nft", "list", "set", "inet", "romana", "underlay-v4"); err != nil || !strings.Contains(out, "10.2.0.0/16 . ") {
		t.Fatalf("underlay set on h1: %v\n%s", err, out)
	}
	sink := listenUDP(t, e1.Namespace, netip.AddrPortFrom(a1.IP, 9999))
	dst := netip.AddrPortFrom(a1.IP, 9999)
	// Legitimate cross-host traffic: e2 -> e1 (h1 learns h2's MAC on its own).
	expect.Eventually(t, "e2 reaches e1", within, func() error {
		if sink.has("legit") {
			return nil
		}
		if err := sendUDP(e2.Namespace, a2.IP, dst, "legit"); err != nil {
			return err
		}
		return fmt.Errorf("nothing arrived yet; status %+v", m1.Status())
	})

	// h1 has a default route on the underlay, as a real host does: an
	// unallocated address of its block then passes the reverse-path check
	// (it routes back out of eth0), and only the endpoint-link rule stops it.
	if out, err := h1.Exec(ctx, "ip", "route", "add", "default", "via", "192.168.83.66"); err != nil {
		t.Fatalf("default route on h1: %v\n%s", err, out)
	}
	// The third machine routes the pool via h1 and holds the forged sources.
	unallocated := w.address("ghost", 1, "open", 3, 200, "").IP
	for _, args := range [][]string{
		{"ip", "route", "add", "10.0.0.0/8", "via", "192.168.83.1"},
		{"ip", "addr", "add", a2.IP.String() + "/32", "dev", "lo"},
		{"ip", "addr", "add", unallocated.String() + "/32", "dev", "lo"},
	} {
		if out, err := x.Exec(ctx, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	expect.Eventually(t, "the third machine reaches e1 from its own address", within, func() error {
		if sink.has("plain") {
			return nil
		}
		if err := sendUDP(x.Namespace, netip.MustParseAddr("192.168.83.66"), dst, "plain"); err != nil {
			return err
		}
		return errors.New("nothing arrived yet")
	})
	for i := 0; i < 20; i++ {
		for _, s := range []struct {
			from netip.Addr
			tag  string
		}{{a2.IP, "forged-h2"}, {unallocated, "forged-own"}} {
			if err := sendUDP(x.Namespace, s.from, dst, fmt.Sprintf("%s-%d", s.tag, i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	// And legitimate traffic once more, after the forged packets.
	expect.Eventually(t, "e2 still reaches e1", within, func() error {
		if sink.has("again") {
			return nil
		}
		if err := sendUDP(e2.Namespace, a2.IP, dst, "again"); err != nil {
			return err
		}
		return errors.New("nothing arrived yet")
	})
	for _, tag := range []string{"forged-h2", "forged-own"} {
		if sink.has(tag) {
			t.Errorf("a packet %s arrived at e1", tag)
		}
	}
	out, err := h1.Exec(ctx, "nft", "list", "chain", "inet", "romana", "forward")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "source not from its block's host") || !regexpCounter(out, "source not from its block's host") ||
		!regexpCounter(out, "this host's block from a link that is no endpoint's") {
		t.Errorf("the anti-spoofing rules counted nothing:\n%s", out)
	} else {
		t.Logf("h1's forward chain after the forged packets:\n%s", out)
	}
}

// regexpCounter reports whether the rule with comment has counted packets.
func regexpCounter(listing, comment string) bool {
	for _, l := range strings.Split(listing, "\n") {
		if strings.Contains(l, comment) {
			return strings.Contains(l, "counter packets ") && !strings.Contains(l, "counter packets 0 ")
		}
	}
	return false
}

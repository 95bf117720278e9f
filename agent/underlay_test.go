package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/hoststate"
)

// A store holding what romanad refuses (a host at 127.0.0.1, one off the
// underlay, an endpoint on eth0) gets none of it installed: the refused
// routes are in /status, counted in a metric and warned about once; the
// rest converges; removing the bad objects clears the report.
func TestRefusedRoutesReported(t *testing.T) {
	w := newWorld()
	evil := w.host("evil", 9)
	evil.IP = netip.MustParseAddr("127.0.0.1")
	far := w.host("far", 8)
	far.IP = netip.MustParseAddr("203.0.113.8")
	w.snap.Hosts = append(w.snap.Hosts, evil, far)
	good := w.address("a1", 1, "acme", 1, 1, "romana1")
	bad := w.address("bad", 1, "acme", 1, 2, "eth0")
	w.snap.Addresses = []api.Address{good, bad}
	r := newRig(t, w.snap)
	r.kernel.AddLink("eth0", "device")
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: 20 * time.Millisecond, Source: r.src, Routes: r.routes, Firewall: r.fw,
			Metrics: r.metrics, Log: slog.New(slog.NewTextHandler(&logs, nil)), MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	expect.Eventually(t, "converged", within, r.converged)
	expect.Eventually(t, "refusals counted", within, func() error {
		if g := metric(t, r.reg, "romana_agent_routes_refused"); g != 3 {
			return fmt.Errorf("gauge %v", g)
		}
		return nil
	})
	for _, fr := range r.kernel.Routes() {
		if fr.Dev == "eth0" || fr.Via == evil.IP || fr.Via == far.IP {
			t.Fatalf("refused route installed: %s", fr.Route)
		}
	}
	st := r.metrics.Status()
	want := []string{
		bad.IP.String() + "/32 dev eth0 scope link: device: interface \"eth0\" is not an endpoint interface",
		"10.8.0.0/16 via 203.0.113.8: next hop 203.0.113.8 is on no subnet this host is directly connected to",
		"10.9.0.0/16 via 127.0.0.1: next hop: ip 127.0.0.1 is not a usable underlay address: it is in loopback",
	}
	if len(st.RoutesRefused) != len(want) {
		t.Fatalf("status refused: %q", st.RoutesRefused)
	}
	for i, w := range want {
		if !strings.HasPrefix(st.RoutesRefused[i], w) {
			t.Errorf("refused[%d] = %q, want it to start with %q", i, st.RoutesRefused[i], w)
		}
	}
	if err := r.metrics.Health(); err != nil {
		t.Errorf("health: %v (refusals do not make the agent unhealthy: the rest is applied)", err)
	}
	// Resyncs later, each refusal was warned about once.
	n := metric(t, r.reg, "romana_agent_reconciles_total")
	expect.Eventually(t, "three more reconciliations", within, func() error {
		if got := metric(t, r.reg, "romana_agent_reconciles_total"); got < n+3 {
			return fmt.Errorf("%v reconciliations, want %v", got, n+3)
		}
		return nil
	})
	if l := logs.String(); strings.Count(l, "route refused") != 3 {
		t.Fatalf("want three warnings:\n%s", l)
	}
	r.src.del(api.KindAddress, "bad")
	r.src.del(api.KindHost, "evil")
	r.src.del(api.KindHost, "far")
	expect.Eventually(t, "refusals cleared", within, func() error {
		if g := metric(t, r.reg, "romana_agent_routes_refused"); g != 0 || len(r.metrics.Status().RoutesRefused) != 0 {
			return fmt.Errorf("gauge %v", g)
		}
		return nil
	})
	if l := logs.String(); strings.Count(l, "route no longer refused") != 3 {
		t.Fatalf("want three clearances logged:\n%s", l)
	}
}

// In flat mode a remote host whose MAC the host does not know is resolved
// (and reported until it is); once it answers, its block joins the
// anti-spoofing set. Fabric mode resolves nothing.
func TestUnresolvedNeighbors(t *testing.T) {
	w := newWorld()
	w.snap.Hosts = append(w.snap.Hosts, w.host("h3", 3))
	r := newRig(t, w.snap)
	u := newFakeUnderlay()
	u.u.Neighbors = slices.DeleteFunc(u.u.Neighbors, func(n hoststate.Neighbor) bool { return n.IP == netip.MustParseAddr("192.168.0.3") })
	cf := &countingFirewall{Firewall: r.fw}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Underlay: u, Host: "h1", Resync: 20 * time.Millisecond, Source: r.src, Routes: r.routes, Firewall: cf,
			Metrics: r.metrics, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	expect.Eventually(t, "h3 reported unresolved and resolved", within, func() error {
		u.mu.Lock()
		asked := slices.Contains(u.resolved, netip.MustParseAddr("192.168.0.3"))
		u.mu.Unlock()
		st := r.metrics.Status()
		if !asked || !slices.Equal(st.NeighborsUnresolved, []string{"192.168.0.3"}) || metric(t, r.reg, "romana_agent_neighbors_unresolved") != 1 {
			return fmt.Errorf("asked %v, status %v", asked, st.NeighborsUnresolved)
		}
		return nil
	})
	if !hasRoute(r, "10.3.0.0/16") {
		t.Fatal("no route to h3: an unresolved neighbour still gets its route")
	}
	if d := r.nft.Dump(); !strings.Contains(d, "10.2.0.0/16 . 02:00:c0:a8:00:02") || strings.Contains(d, "10.3.0.0/16 .") {
		t.Fatalf("underlay set:\n%s", d)
	}
	// h3 answers.
	u.mu.Lock()
	u.u.Neighbors = append(u.u.Neighbors, hoststate.Neighbor{IP: netip.MustParseAddr("192.168.0.3"), Link: "eth0", MAC: "02:00:c0:a8:00:03"})
	u.mu.Unlock()
	expect.Eventually(t, "h3 in the set", within, func() error {
		if d := r.nft.Dump(); !strings.Contains(d, "10.3.0.0/16 . 02:00:c0:a8:00:03") || len(r.metrics.Status().NeighborsUnresolved) != 0 {
			return fmt.Errorf("unresolved %v; table:\n%s", r.metrics.Status().NeighborsUnresolved, d)
		}
		return nil
	})
	// Its entry is garbage-collected: the MAC is remembered.
	u.mu.Lock()
	u.u.Neighbors = slices.DeleteFunc(u.u.Neighbors, func(n hoststate.Neighbor) bool { return n.IP == netip.MustParseAddr("192.168.0.3") })
	u.resolved = nil
	u.mu.Unlock()
	// Two more firewall applications end after this: the second was
	// computed in a pass that read the underlay without the entry (each
	// pass reads it once, before the firewall; resyncs apply every 20 ms).
	applied := cf.done()
	expect.Eventually(t, "two more firewall applications", within, func() error {
		if got := cf.done(); got < applied+2 {
			return fmt.Errorf("%d applications, want %d", got, applied+2)
		}
		return nil
	})
	if d := r.nft.Dump(); !strings.Contains(d, "10.3.0.0/16 . 02:00:c0:a8:00:03") {
		t.Fatalf("a garbage-collected neighbour was forgotten:\n%s", d)
	}
}

func TestNeighborMemory(t *testing.T) {
	a, b := netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("192.168.0.3")
	m := neighborMemory{}
	keep := map[netip.Addr]bool{a: true, b: true}
	n := func(ip netip.Addr, mac string) hoststate.Neighbor {
		return hoststate.Neighbor{IP: ip, Link: "eth0", MAC: mac}
	}
	got := m.merge(hoststate.Underlay{Neighbors: []hoststate.Neighbor{n(a, "02:00:00:00:00:0a"), n(b, "02:00:00:00:00:0b")}}, keep)
	if len(got.Neighbors) != 2 {
		t.Fatalf("first: %v", got.Neighbors)
	}
	// a vanished from the kernel: remembered; b changed its MAC: replaced.
	got = m.merge(hoststate.Underlay{Neighbors: []hoststate.Neighbor{n(b, "02:00:00:00:00:bb")}}, keep)
	if want := []hoststate.Neighbor{n(a, "02:00:00:00:00:0a"), n(b, "02:00:00:00:00:bb")}; !slices.Equal(got.Neighbors, want) {
		t.Fatalf("second: %v, want %v", got.Neighbors, want)
	}
	// a is no host any more: forgotten.
	got = m.merge(hoststate.Underlay{}, map[netip.Addr]bool{b: true})
	if want := []hoststate.Neighbor{n(b, "02:00:00:00:00:bb")}; !slices.Equal(got.Neighbors, want) {
		t.Fatalf("third: %v, want %v", got.Neighbors, want)
	}
}

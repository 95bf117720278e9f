package demo

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/bird"
	"github.com/romana/romana/expect"
)

func requireFabric(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat(bird.Daemon); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the fabric tests run BIRD 2 (Debian bird2): %v", err)
		}
		t.Skipf("the fabric tests run BIRD 2 (Debian bird2): %v", err)
	}
}

// TestFabricBGP runs the leaf-spine demo with BGP and checks, beyond the
// demo's own verdict (matrix across racks, 100 endpoints changing no
// router table): BIRD's tables hold one route per host on a top-of-rack
// and one per rack on the spine, and a host whose agent stops withdraws
// its block.
func TestFabricBGP(t *testing.T) {
	requireFabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	prefix := labPrefix(t, "romt-fb")
	ls, err := newLeafSpine(Options{Prefix: prefix, BinDir: binDir(t), Out: &out}, FabricOptions{Topology: TopologyLeafSpine, Routes: RoutesBGP})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ls.teardown(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if left, _ := filepath.Glob("/run/netns/" + prefix + "-*"); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	}()
	if err := ls.setup(ctx); err != nil {
		t.Fatalf("setup: %v\n%s", err, out.String())
	}
	res, err := ls.prove(ctx)
	if err != nil || !res.OK {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if len(res.Scaled) == 0 || res.Scaled[0].Endpoints != 108 {
		t.Fatalf("no scale step: %+v", res.Scaled)
	}
	for i, r := range res.Scaled {
		if !reflect.DeepEqual(r.Routes, res.Routers[i].Routes) {
			t.Errorf("%s: table changed with 100 more endpoints:\n%q\n%q", r.Name, res.Routers[i].Routes, r.Routes)
		}
	}

	// BIRD's own view: per-host routes on the top-of-racks, per-rack on the spine.
	hosts, err := ls.cli.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	block := map[string]netip.Prefix{}
	for _, h := range hosts {
		block[h.Name] = h.Slots[0].CIDR
	}
	routers := map[string]*router{}
	for _, rt := range ls.routers {
		routers[rt.dev.Name] = rt
	}
	learned := func(r, proto string) []netip.Prefix {
		nets, err := routers[r].bird.Networks(ctx, "protocol", proto)
		if err != nil {
			t.Fatal(err)
		}
		return nets
	}
	for _, rk := range lsRacks {
		for _, h := range rk.hosts {
			if got := learned(rk.tor, h); !slices.Equal(got, []netip.Prefix{block[h]}) {
				t.Errorf("%s learned %v from %s, want its block %s only", rk.tor, got, h, block[h])
			}
		}
		var wantAgg netip.Prefix
		for _, h := range hosts {
			if h.Name == rk.hosts[0] {
				wantAgg, _ = ls.plan.GroupCIDR(h.Slots[0].Loc.Groups)
			}
		}
		if got := learned("spine1", rk.tor); !slices.Equal(got, []netip.Prefix{wantAgg}) {
			t.Errorf("spine1 learned %v from %s, want the rack's block %s only", got, rk.tor, wantAgg)
		}
	}
	if n := len(res.Routers[0].Routes); n != len(lsRacks) {
		t.Errorf("spine kernel routes: %d, want one per rack (%d)", n, len(lsRacks))
	}

	// An agent stops: its host's block is withdrawn from its top-of-rack;
	// the spine keeps the rack's aggregate.
	var h4 *proc
	for _, a := range ls.agents {
		if a.name == "agent-h4" {
			h4 = a
		}
	}
	if err := h4.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "tor2 forgets h4's block after its agent stopped", 30*time.Second, func() error {
		if len(learned("tor2", "h4")) > 0 {
			return fmt.Errorf("tor2 still has it:\n%s", routers["tor2"].bird.Tail(20))
		}
		return nil
	})
	tor2, err := ls.routerReport(ctx, routers["tor2"])
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range tor2.Routes {
		if strings.HasPrefix(l, block["h4"].String()+" ") {
			t.Errorf("tor2's kernel still routes h4's block: %q", tor2.Routes)
		}
	}
	if got := learned("tor2", "h3"); !slices.Equal(got, []netip.Prefix{block["h3"]}) {
		t.Errorf("h3's block on tor2: %v", got)
	}
	spine, err := ls.routerReport(ctx, routers["spine1"])
	if err != nil || !reflect.DeepEqual(spine.Routes, res.Routers[0].Routes) {
		t.Errorf("spine changed when one host stopped: %q (%v)", spine.Routes, err)
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Errorf("no PASS line:\n%s", out.String())
	}
	noSecrets(t, out.String())
}

// TestFabricStatic runs the demo with romanad's static routes loaded into BIRD.
func TestFabricStatic(t *testing.T) {
	requireFabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	prefix := labPrefix(t, "romt-fs")
	res, err := RunFabric(ctx, Options{Prefix: prefix, BinDir: binDir(t), Out: &out},
		FabricOptions{Topology: TopologyLeafSpine, Routes: RoutesStatic, Scale: 20})
	if err != nil || !res.OK {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	counts := map[string]int{}
	for _, r := range res.Scaled {
		counts[r.Name] = len(r.Routes)
	}
	// A top-of-rack: one route per host of its rack and one pool route; the spine one per rack.
	if want := map[string]int{"spine1": 2, "tor1": 3, "tor2": 3}; !reflect.DeepEqual(counts, want) {
		t.Errorf("route counts with %d endpoints: %v, want %v", res.Scaled[0].Endpoints, counts, want)
	}
	noSecrets(t, out.String())
	if left, _ := filepath.Glob("/run/netns/" + prefix + "-*"); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

func TestFabricOptions(t *testing.T) {
	for _, f := range []FabricOptions{{Topology: "clos"}, {Topology: TopologyLeafSpine, Routes: "ospf"}} {
		if _, err := newLeafSpine(Options{}, f); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	// The devices describe the wiring: every top-of-rack reaches the spine and back.
	for _, dual := range []bool{false, true} {
		cfgs := lsDevices(dual)
		links := map[bool]int{false: 2, true: 4}[dual]
		if len(cfgs) != 3 || cfgs[0].Name != "spine1" || len(cfgs[0].Links) != links || len(cfgs[1].Links) != links {
			t.Fatalf("devices (dual-stack %v): %+v", dual, cfgs)
		}
		for _, d := range cfgs {
			if _, err := d.Validate(); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestFabricDualStack runs the leaf-spine demo with --dual-stack over BGP:
// beyond the demo's verdict (both matrices across racks, endpoints
// changing no router table), BIRD holds each host's IPv6 block from the
// host's IPv6 session and each rack's IPv6 aggregate on the spine; when
// h4's agent stops, tor2 forgets h4's IPv6 block and a rack-1 endpoint no
// longer reaches h4's endpoint over IPv6.
func TestFabricDualStack(t *testing.T) {
	requireFabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	prefix := labPrefix(t, "romt-fd")
	ls, err := newLeafSpine(Options{Prefix: prefix, BinDir: binDir(t), Out: &out},
		FabricOptions{Topology: TopologyLeafSpine, Routes: RoutesBGP, Scale: 20, DualStack: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ls.teardown(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if left, _ := filepath.Glob("/run/netns/" + prefix + "-*"); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	}()
	if err := ls.setup(ctx); err != nil {
		t.Fatalf("setup: %v\n%s", err, out.String())
	}
	res, err := ls.prove(ctx)
	if err != nil || !res.OK {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if res.Matrix6 == nil || len(res.Matrix6.Cells) != 64 {
		t.Fatalf("no IPv6 matrix: %+v", res.Matrix6)
	}
	allowed := 0
	for _, c := range res.Matrix6.Cells {
		if c.Expected && c.TCP && c.Ping {
			allowed++
		}
	}
	if allowed != 16 {
		t.Errorf("IPv6: %d pairs reachable by TCP and ping, want 16", allowed)
	}

	hosts, err := ls.cli.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	block6 := map[string]netip.Prefix{}
	var groups6 = map[string]netip.Prefix{}
	for _, h := range hosts {
		for _, s := range h.Slots {
			if s.Network == fabricNetwork6.Name {
				block6[h.Name] = s.CIDR
				g, err := ls.plans[1].GroupCIDR(s.Loc.Groups)
				if err != nil {
					t.Fatal(err)
				}
				groups6[h.Labels["rack"]] = g
			}
		}
	}
	routers := map[string]*router{}
	for _, rt := range ls.routers {
		routers[rt.dev.Name] = rt
	}
	learned := func(r, proto string) []netip.Prefix {
		nets, err := routers[r].bird.Networks(ctx, "protocol", proto)
		if err != nil {
			t.Fatal(err)
		}
		return nets
	}
	for _, rk := range lsRacks {
		for _, h := range rk.hosts {
			if got := learned(rk.tor, h+"v6"); !slices.Equal(got, []netip.Prefix{block6[h]}) {
				t.Errorf("%s learned %v from %sv6, want its IPv6 block %s only", rk.tor, got, h, block6[h])
			}
		}
		if got := learned("spine1", rk.tor+"v6"); !slices.Equal(got, []netip.Prefix{groups6[rk.name]}) {
			t.Errorf("spine1 learned %v from %sv6, want the rack's IPv6 block %s only", got, rk.tor, groups6[rk.name])
		}
	}

	// e1 (acme@h1) reaches e4 (acme@h4) over IPv6 until h4's agent stops.
	var e1, e4 Endpoint
	for _, e := range ls.eps {
		switch e.Name {
		case "e1":
			e1 = e
		case "e4":
			e4 = e
		}
	}
	dst := netip.AddrPortFrom(ls.ip6[e4.Name], ProbePort)
	if err := dialIn(e1.NS, dst, 2*time.Second); err != nil {
		t.Fatalf("e1 -> e4 over IPv6 before the stop: %v", err)
	}
	for _, a := range ls.agents {
		if a.name == "agent-h4" {
			if err := a.stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	expect.Eventually(t, "tor2 forgets h4's IPv6 block after its agent stopped", 30*time.Second, func() error {
		if got := learned("tor2", "h4v6"); len(got) > 0 {
			return fmt.Errorf("tor2 still has %v", got)
		}
		return nil
	})
	if err := dialIn(e1.NS, dst, 2*time.Second); err == nil {
		t.Errorf("e1 still reaches e4 at %s after h4 withdrew its IPv6 block", dst)
	}
	if got := learned("tor2", "h3v6"); !slices.Equal(got, []netip.Prefix{block6["h3"]}) {
		t.Errorf("h3's IPv6 block on tor2: %v", got)
	}
	noSecrets(t, out.String())
}

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

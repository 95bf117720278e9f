package route_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim/simtest"
)

// Policy in a simulated host: chain rules and routes converge (also after
// damage), foreign rules and routes in other tables survive, Cleanup
// removes only ours; the pinger tells a live endpoint from a dead one.
func TestPolicyInNamespace(t *testing.T) {
	simtest.Require(t, "ping")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.51.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	fw := netip.MustParseAddr("10.1.48.1")
	ep, err := lab.AddEndpoint(ctx, h, "fw", fw, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"ip", "rule", "add", "priority", "500", "fwmark", "0x4000", "lookup", "100"},
		// Foreign rules at our priority, pointing into our table range:
		// one of its own, one the same as a rule we want.
		{"ip", "rule", "add", "priority", "1000", "fwmark", "0x10000041/0x1000ffff", "lookup", "20065"},
		{"ip", "rule", "add", "priority", "1000", "fwmark", "0x10000012/0x1000ffff", "lookup", "20018"},
		{"ip", "route", "add", "default", "via", "192.168.51.254", "table", "100"},
		{"ip", "route", "add", fw.String() + "/32", "dev", ep.HostIface, "proto", "190"},
	} {
		if _, err := h.Exec(ctx, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	var p *route.Policy
	do := func(f func() error) {
		t.Helper()
		if err := h.Do(f); err != nil {
			t.Fatal(err)
		}
	}
	do(func() (err error) { p, err = route.NewPolicy(nil); return err })
	rules := []hoststate.IPRule{{Mark: hoststate.Mark(1, 1), Table: hoststate.RouteTable(1, 1)}, {Mark: hoststate.Mark(1, 2), Table: hoststate.RouteTable(1, 2)}, {Mark: hoststate.Mark(2, 1), Table: hoststate.RouteTable(2, 1)}}
	routes := []hoststate.TableRoute{
		{Table: hoststate.RouteTable(1, 1), Via: fw, Dev: ep.HostIface},
		{Table: hoststate.RouteTable(1, 2), Via: netip.MustParseAddr("192.168.51.2")},
		{Table: hoststate.RouteTable(2, 1), Blackhole: true},
	}
	foreignRules := func(what, r string) {
		t.Helper()
		for _, s := range []string{"1000:\tfrom all fwmark 0x10000041/0x1000ffff lookup 20065\n", "1000:\tfrom all fwmark 0x10000012/0x1000ffff lookup 20018\n"} {
			if !strings.Contains(r, s) {
				t.Errorf("%s: foreign rule %q gone:\n%s", what, s, r)
			}
		}
	}
	want := func(what string) {
		t.Helper()
		r, _ := h.Exec(ctx, "ip", "rule")
		rt, _ := h.Exec(ctx, "ip", "route", "show", "table", "all", "proto", "190")
		for _, s := range []string{"1000:\tfrom all fwmark 0x10000011/0x1000ffff lookup 20017", "fwmark 0x10000012/0x1000ffff lookup 20018", "fwmark 0x10000021/0x1000ffff lookup 20033", "500:\tfrom all fwmark 0x4000 lookup 100"} {
			if !strings.Contains(r, s) {
				t.Errorf("%s: ip rule lacks %q:\n%s", what, s, r)
			}
		}
		for _, s := range []string{"default via " + fw.String() + " dev " + ep.HostIface + " table 20017 onlink", "default via 192.168.51.2 dev eth0 table 20018", "blackhole default table 20033"} {
			if !strings.Contains(rt, s) {
				t.Errorf("%s: routes lack %q:\n%s", what, s, rt)
			}
		}
		if strings.Count(r, "lookup 2003") != 1 || strings.Count(r, "lookup 2001") != 3 || strings.Count(r, "proto 190") != 3 {
			t.Errorf("%s: duplicate or missing rules:\n%s", what, r)
		}
		for _, s := range []string{"lookup 20017 proto 190", "lookup 20018 proto 190", "lookup 20033 proto 190"} {
			if !strings.Contains(r, s) {
				t.Errorf("%s: our rules are not tagged with our protocol (%q):\n%s", what, s, r)
			}
		}
		foreignRules(what, r)
	}
	do(func() error { return p.Sync(ctx, rules, routes) })
	want("first sync")
	do(func() error { return p.Sync(ctx, rules, routes) })
	want("second sync")
	for _, cmd := range [][]string{
		{"ip", "rule", "del", "priority", "1000", "lookup", "20018", "protocol", "190"},
		{"ip", "route", "flush", "table", "20017"},
		{"ip", "route", "replace", "default", "via", "192.168.51.9", "table", "20018", "proto", "190"},
		{"ip", "rule", "add", "priority", "1000", "fwmark", "0x10000031/0x1000ffff", "lookup", "20049", "proto", "190"},
	} {
		if _, err := h.Exec(ctx, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	do(func() error { return p.Sync(ctx, rules, routes) })
	want("after damage")
	if r, _ := h.Exec(ctx, "ip", "rule"); strings.Contains(r, "20049") {
		t.Errorf("stale rule survived:\n%s", r)
	}
	if rt, _ := h.Exec(ctx, "ip", "route", "show", "table", "20018"); strings.Contains(rt, "192.168.51.9") {
		t.Errorf("wrong route survived:\n%s", rt)
	}

	// Health: the endpoint answers (once the host holds its gateway); an
	// address nobody holds does not.
	do(func() error {
		m, err := route.New(nil)
		if err != nil {
			return err
		}
		return m.EnsureGateway(ctx, hoststate.DefaultGateway())
	})
	do(func() error { return route.Pinger{}.Probe(ctx, fw) })
	do(func() error {
		if err := (route.Pinger{}).Probe(ctx, netip.MustParseAddr("10.1.48.99")); err == nil {
			t.Error("probe of an address nobody holds succeeded")
		}
		return nil
	})

	do(func() error { return p.Cleanup(ctx) })
	r, _ := h.Exec(ctx, "ip", "rule")
	rt, _ := h.Exec(ctx, "ip", "route", "show", "table", "all")
	if strings.Contains(r, "proto 190") || strings.Contains(rt, "table 200") {
		t.Errorf("after Cleanup:\n%s\n%s", r, rt)
	}
	foreignRules("after Cleanup", r)
	if !strings.Contains(r, "fwmark 0x4000 lookup 100") || !strings.Contains(rt, "default via 192.168.51.254 dev eth0 table 100") || !strings.Contains(rt, fw.String()+" dev "+ep.HostIface) {
		t.Errorf("foreign rule or routes gone after Cleanup:\n%s\n%s", r, rt)
	}
}

// A foreign route holding a desired chain route's place (its table's
// default route) in the kernel: Policy leaves it alone and says so, and
// installs its own once the foreign route is gone. (RouteReplace would
// replace it, whatever its protocol.)
func TestPolicyLeavesForeignRouteInPlace(t *testing.T) {
	simtest.Require(t)
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.52.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	table := hoststate.RouteTable(1, 1)
	if _, err := h.Exec(ctx, "ip", "route", "add", "blackhole", "default", "table", fmt.Sprint(table)); err != nil {
		t.Fatal(err)
	}
	var p *route.Policy
	if err := h.Do(func() (err error) { p, err = route.NewPolicy(nil); return err }); err != nil {
		t.Fatal(err)
	}
	rules := []hoststate.IPRule{{Mark: hoststate.Mark(1, 1), Table: table}}
	routes := []hoststate.TableRoute{{Table: table, Via: netip.MustParseAddr("192.168.52.2")}}
	show := func() string {
		out, err := h.Exec(ctx, "ip", "route", "show", "table", fmt.Sprint(table))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	err = h.Do(func() error { return p.Sync(ctx, rules, routes) })
	if err == nil || !strings.Contains(err.Error(), "held by foreign route table 20017 blackhole default proto 3") {
		t.Fatalf("Sync with a foreign default route in table %d: %v, want an error naming it", table, err)
	}
	if out := show(); out != "blackhole default \n" {
		t.Fatalf("the foreign route was touched: %q", out)
	}
	if _, err := h.Exec(ctx, "ip", "route", "del", "blackhole", "default", "table", fmt.Sprint(table)); err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() error { return p.Sync(ctx, rules, routes) }); err != nil {
		t.Fatal(err)
	}
	if out := show(); out != "default via 192.168.52.2 dev eth0 proto 190 \n" {
		t.Fatalf("after the foreign route went: %q", out)
	}
	if err := h.Do(func() error { return p.Cleanup(ctx) }); err != nil {
		t.Fatal(err)
	}
}

// The pinger over IPv6: an endpoint's IPv6 address answers an ICMPv6 echo
// from its host (the host routes it through the veth, whose fe80::1 the
// endpoint routes back to); once the endpoint drops echo requests, or for
// an address nobody holds, the probe fails.
func TestPingerIPv6InNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.53.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddAddr(netip.MustParsePrefix("fd77::1/64")); err != nil {
		t.Fatal(err)
	}
	fw := netip.MustParseAddr("fd00:1::5")
	ep, err := lab.AddEndpointIPs(ctx, h, "fw6", []netip.Addr{fw}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Exec(ctx, "ip", "-6", "route", "add", fw.String()+"/128", "dev", ep.HostIface); err != nil {
		t.Fatal(err)
	}
	probe := func(ip netip.Addr) (err error) {
		if derr := h.Do(func() error { err = route.Pinger{}.Probe(ctx, ip); return nil }); derr != nil {
			t.Fatal(derr)
		}
		return err
	}
	if err := probe(fw); err != nil {
		t.Fatalf("probe of a live IPv6 endpoint: %v", err)
	}
	if err := probe(netip.MustParseAddr("fd00:1::99")); err == nil {
		t.Error("probe of an IPv6 address nobody holds succeeded")
	}
	if _, err := ep.Exec(ctx, "nft", "add table inet t; add chain inet t in { type filter hook input priority 0; icmpv6 type echo-request drop; }"); err != nil {
		t.Fatal(err)
	}
	if err := probe(fw); err == nil {
		t.Error("probe of an endpoint dropping echo requests succeeded")
	}
}

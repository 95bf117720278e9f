package hoststate

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

// chainLab: demoLab plus tenant infra (id 4) with service functions fw1 on
// h1, fw2 on h2, fw3 on h1 and three chains from acme/default.
func chainLab(t testing.TB) (*lab, map[string]netip.Addr) {
	l := demoLab(t)
	l.tenant("infra", 4, api.IsolationNone, "fw")
	sf := map[string]netip.Addr{
		"fw1": l.endpoint(1, 4, 0, 10).IP,
		"fw2": l.endpoint(2, 4, 0, 10).IP,
		"fw3": l.endpoint(1, 4, 0, 11).IP,
	}
	l.snap.Chains = []api.Chain{
		{Name: "two-hop", ID: 1, Tenant: "acme", Segment: "default", ToTenant: "beta", Via: []netip.Addr{sf["fw1"], sf["fw2"]}, Failure: api.FailOpen},
		{Name: "web", ID: 2, Tenant: "acme", Segment: "default", ToCIDR: netip.MustParsePrefix("10.3.0.0/16"), Proto: "tcp", Port: 80, Via: []netip.Addr{sf["fw3"]}, Failure: api.FailClosed},
	}
	return l, sf
}

func TestSteeringGolden(t *testing.T) {
	l, sf := chainLab(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		st, err := ComputeSteering(l.snap, h, nil)
		if err != nil {
			t.Fatal(err)
		}
		expect.Golden(t, "chain-"+h+".txt", st.String())
	}
	// fw3 down: chain web is fail-closed (blackhole); fw1 down: two-hop
	// bypasses it, straight to fw2 (via h2).
	down := func(a netip.Addr) bool { return a != sf["fw3"] && a != sf["fw1"] }
	st, err := ComputeSteering(l.snap, "h1", down)
	if err != nil {
		t.Fatal(err)
	}
	expect.Golden(t, "chain-h1-down.txt", st.String())
}

func TestSteeringNoChains(t *testing.T) {
	l := demoLab(t)
	st, err := ComputeSteering(l.snap, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Empty() {
		t.Fatalf("no chains, want empty steering:\n%s", st)
	}
	if strings.Contains(l.compute("h1", ModeFlat).Firewall.String(), "meta mark") {
		t.Fatal("no chains: the anti-spoofing rules must be unchanged")
	}
}

func TestSteeringAntiSpoofing(t *testing.T) {
	l, _ := chainLab(t)
	fw := l.compute("h1", ModeFlat).Firewall.String()
	if !strings.Contains(fw, "ip saddr 10.0.0.0/8 meta mark & 0x10000000 == 0 fib saddr . iif oif missing counter drop") {
		t.Fatalf("anti-spoofing rule does not let steered packets pass:\n%s", fw)
	}
}

func TestSteeringProblems(t *testing.T) {
	l, sf := chainLab(t)
	l.snap.Chains = append(l.snap.Chains,
		api.Chain{Name: "ghost", ID: 3, Tenant: "acme", Segment: "nope", Via: []netip.Addr{sf["fw1"]}},
		api.Chain{Name: "dup", ID: 1, Tenant: "acme", Segment: "default", Via: []netip.Addr{sf["fw1"]}},
		api.Chain{Name: "gone", ID: 4, Tenant: "acme", Segment: "default", Via: []netip.Addr{netip.MustParseAddr("10.1.64.99")}, Failure: api.FailClosed},
	)
	st, err := ComputeSteering(l.snap, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(st.Problems, "\n")
	for _, want := range []string{`chain "ghost": unknown segment`, `chain "two-hop": id 1 is also chain "dup"'s`, `chain "gone": via 10.1.64.99 is not an attached endpoint`} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if !strings.Contains(st.String(), "table 20065 blackhole default") {
		t.Errorf("chain gone (fail-closed, via missing): want a blackhole in its table:\n%s", st)
	}
}

// A host whose underlay address is no next hop (loopback, inside a pool)
// never becomes a steering route's gateway: its functions count as down.
func TestSteeringHostileHostIP(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "10.1.16.1", "224.0.0.9"} {
		l, _ := chainLab(t)
		l.snap.Hosts[1].IP = netip.MustParseAddr(ip) // h2 runs fw2
		st, err := ComputeSteering(l.snap, "h1", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range st.Routes {
			if r.Via.String() == ip {
				t.Errorf("h2 at %s: steering route %s", ip, r)
			}
		}
		if p := strings.Join(st.Problems, "\n"); !strings.Contains(p, `host "h2": next hop`) || !strings.Contains(p, "its service functions are treated as down") {
			t.Errorf("h2 at %s: problems:\n%s", ip, p)
		}
	}
}

// TestSteeringIPv6 is a chain whose function is an IPv6 address in a
// dual-stack snapshot: it steers IPv6 packets only (ip6 matches), its
// tables hold IPv6 default routes, a remote hop goes via the function
// host's ip6, and a chain of IPv4 functions beside it steers IPv4 only.
func TestSteeringIPv6(t *testing.T) {
	snap := familySnapshot(t, "10.0.0.0/8", "fd00:1234:5678::/48")
	via := func(net, host string) netip.Addr {
		for _, a := range snap.Addresses {
			if a.Network == net && a.Host == host && a.Tenant == "beta" && a.Segment == "web" {
				return a.IP
			}
		}
		t.Fatalf("no beta/web address of %s in %s", host, net)
		return netip.Addr{}
	}
	f6, f4 := via("n1", "h2"), via("n0", "h2")
	snap.Chains = []api.Chain{
		{Name: "six", ID: 1, Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f6}, Failure: api.FailOpen},
		{Name: "four", ID: 2, Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f4}, Failure: api.FailClosed},
		{Name: "mixed", ID: 3, Tenant: "acme", Segment: "default", Via: []netip.Addr{f4, f6}},
	}
	h1, err := ComputeSteering(snap, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes := []TableRoute{
		{Table: RouteTable(1, 1), Via: netip.MustParseAddr("fd77::2"), V6: true},
		{Table: RouteTable(2, 1), Via: netip.MustParseAddr("192.168.0.2")},
	}
	if !slices.Equal(h1.Routes, wantRoutes) {
		t.Errorf("h1 routes:\n%v\nwant\n%v", h1.Routes, wantRoutes)
	}
	for _, r := range h1.Rules {
		six, four := strings.Contains(r.Comment, "chain six"), strings.Contains(r.Comment, "chain four")
		if six && (!strings.Contains(r.Expr, "ip6 saddr") || strings.Contains(r.Expr, "ip saddr")) ||
			four && (!strings.Contains(r.Expr, "ip saddr") || strings.Contains(r.Expr, "ip6 ")) {
			t.Errorf("h1: rule of the wrong family: %s # %s", r.Expr, r.Comment)
		}
	}
	if !slices.ContainsFunc(h1.Problems, func(p string) bool {
		return strings.Contains(p, `chain "mixed"`) && strings.Contains(p, "different families")
	}) {
		t.Errorf("h1: no problem for the mixed-family chain: %q", h1.Problems)
	}
	h2, err := ComputeSteering(snap, "h2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(h2.Probes, f6) || !slices.Contains(h2.Probes, f4) {
		t.Errorf("h2 probes %v, want %s and %s", h2.Probes, f6, f4)
	}
	if !slices.ContainsFunc(h2.Routes, func(r TableRoute) bool { return r.Table == RouteTable(1, 1) && r.V6 && r.Via == f6 && r.Dev != "" }) {
		t.Errorf("h2: no IPv6 route to the local function %s: %v", f6, h2.Routes)
	}
	if !strings.Contains(h2.Script(), "ip6 saddr & ") || !strings.Contains(h2.Script(), "notrack") {
		t.Errorf("h2: no ip6 steering rules:\n%s", h2.Script())
	}
	// A host without ip6: its IPv6 functions are down for the others.
	for i := range snap.Hosts {
		if snap.Hosts[i].Name == "h2" {
			snap.Hosts[i].IP6 = netip.Addr{}
		}
	}
	h1, _ = ComputeSteering(snap, "h1", nil)
	if slices.ContainsFunc(h1.Routes, func(r TableRoute) bool { return r.V6 }) ||
		!slices.ContainsFunc(h1.Problems, func(p string) bool { return strings.Contains(p, "no usable IPv6") }) {
		t.Errorf("h2 without ip6: h1 routes %v, problems %q", h1.Routes, h1.Problems)
	}
}

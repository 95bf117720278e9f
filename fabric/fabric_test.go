package fabric

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim/simtest"
)

func TestAggDepth(t *testing.T) {
	two, err := plan.New("n", netip.MustParsePrefix("10.0.0.0/8"), []plan.Field{
		{Name: "zone", Bits: 2}, {Name: "rack", Bits: 4}, {Name: "host", Bits: 4}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}})
	if err != nil {
		t.Fatal(err)
	}
	none, err := plan.New("n", netip.MustParsePrefix("10.0.0.0/8"), []plan.Field{
		{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p     *plan.Plan
		group map[string]string
		want  int
	}{
		{two, map[string]string{"zone": "a", "rack": "r1"}, 2},
		{two, map[string]string{"zone": "a"}, 1},
		{two, map[string]string{"rack": "r1"}, 0},             // rack r1 may exist in every zone
		{two, map[string]string{"zone": "a", "pod": "p1"}, 0}, // pod is not a level: some hosts of zone a are elsewhere
		{two, map[string]string{"zone": "a", "rack": "r", "x": "1"}, 0},
		{none, map[string]string{"rack": "r1"}, 0},
	} {
		if got := aggDepth(tc.p, tc.group); got != tc.want {
			t.Errorf("aggDepth(%s, %v) = %d, want %d", tc.p, tc.group, got, tc.want)
		}
	}
}

// A top-of-rack whose selector is not a level prefix gets no aggregate:
// the spine routes each host's CIDR instead.
func TestNoAggregationWithoutLevel(t *testing.T) {
	snap := newBuilder(t).
		network("pods", "10.0.0.0/8", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 4},
			plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4}).
		host("h1", "192.168.1.11", "rack", "r1", "row", "a").
		host("h2", "192.168.1.12", "rack", "r1", "row", "b").
		device(api.Device{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1", "row": "a"},
			Links: []api.DeviceLink{link("spine1", "172.16.0.1/31", "172.16.0.0")}}).
		device(api.Device{Name: "spine1", Kind: api.DeviceSpine}).snap
	tab, err := Compute(snap, "spine1")
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{{Dst: netip.MustParsePrefix("10.0.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("172.16.0.1")}, Note: "host h1 via tor1"}}
	if !reflect.DeepEqual(tab.Routes, want) {
		t.Errorf("spine routes = %v, want %v", tab.Routes, want)
	}
}

func TestProblems(t *testing.T) {
	b := newBuilder(t).
		network("pods", "10.0.0.0/8", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 4},
			plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4}).
		host("h1", "192.168.9.11", "rack", "r1").
		device(api.Device{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"},
			Links: []api.DeviceLink{link("", "192.168.1.1/24", ""), link("ghost", "172.16.0.1/31", ""), link("spine1", "172.16.0.3/31", "")}}).
		device(api.Device{Name: "tor9", Kind: api.DeviceToR, Group: map[string]string{"rack": "r9"}}).
		device(api.Device{Name: "spine1", Kind: api.DeviceSpine}).
		device(api.Device{Name: "spine1", Kind: api.DeviceSpine}).
		device(api.Device{Name: "Bad", Kind: api.DeviceSpine})
	tab, err := Compute(b.snap, "tor1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`host "h1": ip 192.168.9.11 is on none of device "tor1"'s host links`,
		`device "tor1": link to unknown device "ghost"`,
		`device "tor1": link 172.16.0.3/31 to "spine1" has no remote address and "spine1" does not describe it`,
		`device "spine1": listed twice`,
		`invalid device name "Bad"`,
	} {
		if !slices.ContainsFunc(tab.Problems, func(p string) bool { return strings.Contains(p, want) }) {
			t.Errorf("problems %q lack %q", tab.Problems, want)
		}
	}
	// The host route is still there: problems never stop the rest.
	if len(tab.Routes) != 1 || tab.Routes[0].Dst != netip.MustParsePrefix("10.0.0.0/16") {
		t.Errorf("routes = %v", tab.Routes)
	}
	if tab, err = Compute(b.snap, "tor9"); err != nil || len(tab.Routes) != 0 ||
		!slices.Contains(tab.Problems, `device "tor9": no host has the labels rack=r9`) {
		t.Errorf("tor9: %v %v %q", err, tab.Routes, tab.Problems)
	}
	if _, err := Compute(b.snap, "nope"); err == nil || !strings.Contains(err.Error(), `device "nope" is not in the topology`) {
		t.Errorf("unknown device: %v", err)
	}
	if _, err := Compute(b.snap, "Bad"); err == nil || !strings.Contains(err.Error(), "invalid device name") {
		t.Errorf("invalid device: %v", err)
	}
}

// The whole point: endpoints never change a fabric device's table.
func TestEndpointsDoNotChangeTables(t *testing.T) {
	base := leafSpine(t)
	more := leafSpine(t)
	b := &builder{tb: t, snap: more, plans: map[string]*plan.Plan{}}
	for _, n := range more.Networks {
		b.plans[n.Name], _ = plan.Parse(n.Spec())
	}
	b.endpoints("pods", 1000)
	b.endpoints("flat", 14)
	if len(b.snap.Addresses) < 4000 {
		t.Fatalf("only %d addresses", len(b.snap.Addresses))
	}
	for _, dev := range []string{"tor1", "tor2a", "tor2b", "spine1", "spine2"} {
		t1, err1 := Compute(base, dev)
		t2, err2 := Compute(b.snap, dev)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !reflect.DeepEqual(t1, t2) {
			t.Errorf("%s: %d endpoints changed the table:\n%v\n%v", dev, len(b.snap.Addresses), t1.Routes, t2.Routes)
		}
	}
}

// Adding a host adds one route on its top-of-rack and none on the spine
// when its rack already exists; a new rack adds one spine route.
func TestHostsGrowRoutes(t *testing.T) {
	b := newBuilder(t).
		network("pods", "10.0.0.0/8", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 4},
			plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4}).
		device(api.Device{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"},
			Links: []api.DeviceLink{link("spine1", "172.16.0.1/31", "172.16.0.0")}}).
		device(api.Device{Name: "tor2", Kind: api.DeviceToR, Group: map[string]string{"rack": "r2"},
			Links: []api.DeviceLink{link("spine1", "172.16.0.3/31", "172.16.0.2")}}).
		device(api.Device{Name: "spine1", Kind: api.DeviceSpine})
	count := func(dev string) int {
		tab, err := Compute(b.snap, dev)
		if err != nil {
			t.Fatal(err)
		}
		return len(tab.Routes)
	}
	b.host("h1", "192.168.1.11", "rack", "r1")
	if got := []int{count("tor1"), count("spine1")}; !slices.Equal(got, []int{2, 1}) {
		t.Errorf("one host: tor1, spine1 = %v, want [2 1] (host + pool; rack)", got)
	}
	b.host("h2", "192.168.1.12", "rack", "r1")
	if got := []int{count("tor1"), count("spine1")}; !slices.Equal(got, []int{3, 1}) {
		t.Errorf("two hosts in r1: tor1, spine1 = %v, want [3 1]", got)
	}
	b.host("h3", "192.168.2.13", "rack", "r2")
	if got := []int{count("tor1"), count("tor2"), count("spine1")}; !slices.Equal(got, []int{3, 2, 2}) {
		t.Errorf("new rack: tor1, tor2, spine1 = %v, want [3 2 2]", got)
	}
}

func TestForHost(t *testing.T) {
	snap := leafSpine(t)
	snap.Devices = append(snap.Devices, api.Device{Name: "tor1b", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}},
		api.Device{Name: "tor1c", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65101,
			Links: []api.DeviceLink{link("", "192.168.7.1/24", "")}})
	hb, err := ForHost(snap, "h1")
	if err != nil {
		t.Fatal(err)
	}
	want := []Peer{{Device: "tor1", Addr: netip.MustParseAddr("192.168.1.1"), ASN: 65101}}
	if !reflect.DeepEqual(hb.Peers, want) {
		t.Errorf("peers = %v, want %v", hb.Peers, want)
	}
	for _, p := range []string{`device "tor1b" serves host "h1" but has no ASN`, `device "tor1c" serves host "h1" but has no host link on the subnet of 192.168.1.11`} {
		if !slices.Contains(hb.Problems, p+": no BGP session") {
			t.Errorf("problems %q lack %q", hb.Problems, p)
		}
	}
	if _, err := ForHost(snap, "nope"); err == nil {
		t.Error("unknown host: no error")
	}
}

func TestAcceptable(t *testing.T) {
	accept := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	own := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	for _, tc := range []struct {
		dst  string
		want bool
	}{
		{"10.0.0.0/8", true},   // the pool: contains our block, but our endpoint routes are more specific
		{"10.16.0.0/12", true}, // another rack
		{"10.2.0.0/16", true},  // another host
		{"10.1.0.0/16", false}, // our own block
		{"10.1.2.0/24", false}, // inside it
		{"0.0.0.0/0", false},   // never the underlay's default
		{"192.168.1.0/24", false},
		{"10.0.0.0/7", false},
	} {
		if got := Acceptable(netip.MustParsePrefix(tc.dst), accept, own); got != tc.want {
			t.Errorf("Acceptable(%s) = %v, want %v", tc.dst, got, tc.want)
		}
	}
}

// TestIPScriptApplies runs the rendered `ip route` script of tor1 in a
// namespace with the links it needs and checks the kernel took every
// route, ECMP routes with all their next hops.
func TestIPScriptApplies(t *testing.T) {
	lab := simtest.New(t)
	ctx := context.Background()
	ns, err := lab.AddNamespace(ctx, "tor1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"ip", "link", "add", "hosts0", "type", "bridge"},
		{"ip", "link", "set", "hosts0", "up"},
		{"ip", "addr", "add", "192.168.1.1/24", "dev", "hosts0"},
		{"ip", "link", "add", "up0", "type", "bridge"},
		{"ip", "link", "set", "up0", "up"},
		{"ip", "addr", "add", "172.16.0.1/31", "dev", "up0"},
		{"ip", "link", "add", "up1", "type", "bridge"},
		{"ip", "link", "set", "up1", "up"},
		{"ip", "addr", "add", "172.16.1.1/31", "dev", "up1"},
	} {
		if _, err := ns.Exec(ctx, c...); err != nil {
			t.Fatal(err)
		}
	}
	tab, err := Compute(leafSpine(t), "tor1")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "routes.sh")
	if err := os.WriteFile(script, []byte("set -e\n"+RenderIP(tab)), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // replace: running it twice is fine
		if _, err := ns.Exec(ctx, "sh", script); err != nil {
			t.Fatal(err)
		}
	}
	out, err := ns.Exec(ctx, "ip", "-4", "route", "show", "proto", "static")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var tops []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "\t") {
			tops = append(tops, l)
		}
	}
	if len(tops) != len(tab.Routes) {
		t.Fatalf("kernel has %d static routes, want %d:\n%s", len(tops), len(tab.Routes), out)
	}
	if !strings.Contains(out, "10.0.0.0/8 \n\tnexthop via 172.16.0.0 dev up0 weight 1 \n\tnexthop via 172.16.1.0 dev up1 weight 1") {
		t.Errorf("ECMP pool route missing:\n%s", out)
	}
}

// The dual-stack tor1's script installs its IPv4 and IPv6 routes in a
// kernel, each via the host's underlay address of the route's family.
func TestIPScriptAppliesDualStack(t *testing.T) {
	lab := simtest.New(t)
	ctx := context.Background()
	ns, err := lab.AddNamespace(ctx, "tor1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"ip", "link", "add", "hosts0", "type", "bridge"},
		{"ip", "link", "set", "hosts0", "up"},
		{"ip", "addr", "add", "192.168.1.1/24", "dev", "hosts0"},
		{"ip", "addr", "add", "fd00:1::1/64", "dev", "hosts0", "nodad"},
		{"ip", "link", "add", "up0", "type", "bridge"},
		{"ip", "link", "set", "up0", "up"},
		{"ip", "addr", "add", "172.16.0.1/31", "dev", "up0"},
		{"ip", "addr", "add", "fd00:ff::1/127", "dev", "up0", "nodad"},
	} {
		if _, err := ns.Exec(ctx, c...); err != nil {
			t.Fatal(err)
		}
	}
	tab, err := Compute(dualStack(t), "tor1")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "routes.sh")
	if err := os.WriteFile(script, []byte("set -e\n"+RenderIP(tab)), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := ns.Exec(ctx, "sh", script); err != nil {
			t.Fatal(err)
		}
	}
	for fam, want := range map[string][]string{
		"-4": {"10.0.0.0/8 via 172.16.0.0 dev up0", "10.0.0.0/16 via 192.168.1.11 dev hosts0", "10.1.0.0/16 via 192.168.1.12 dev hosts0"},
		"-6": {"fd00:1234:5678::/48 via fd00:ff:: dev up0", "fd00:1234:5678::/64 via fd00:1::11 dev hosts0", "fd00:1234:5678:1::/64 via fd00:1::12 dev hosts0"},
	} {
		out, err := ns.Exec(ctx, "ip", fam, "route", "show", "proto", "static")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(want) {
			t.Errorf("ip %s: kernel has %d static routes, want %d:\n%s", fam, len(lines), len(want), out)
		}
		for _, w := range want {
			if !strings.Contains(out, w+" ") {
				t.Errorf("ip %s: lacks %q:\n%s", fam, w, out)
			}
		}
	}
}

// A host's block of one family needs an underlay address of that family;
// a dual-stack host peers once per family its top-of-rack has a host link in.
func TestDualStackUnderlay(t *testing.T) {
	b := newBuilder(t).
		network("pods6", "fd00:1234:5678::/48", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 12},
			plan.Field{Name: "tenant", Bits: 8}, plan.Field{Name: "segment", Bits: 8}).
		host("h1", "192.168.1.11", "rack", "r1").
		host("h2", "192.168.1.12", "rack", "r1").ip6("fd00:1::12").
		device(api.Device{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65101,
			Links: []api.DeviceLink{link("", "192.168.1.1/24", ""), link("", "fd00:1::1/64", "")}}).
		device(api.Device{Name: "tor4", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65104,
			Links: []api.DeviceLink{link("", "192.168.1.4/24", "")}})
	tab, err := Compute(b.snap, "tor1")
	if err != nil {
		t.Fatal(err)
	}
	if want := `host "h1": no IPv6 underlay address to be the next hop of its block fd00:1234:5678::/64 in network "pods6"; skipped`; !slices.Contains(tab.Problems, want) {
		t.Errorf("problems %q lack %q", tab.Problems, want)
	}
	if len(tab.Routes) != 1 || tab.Routes[0].String() != "fd00:1234:5678:1::/64 via fd00:1::12" {
		t.Errorf("routes = %v", tab.Routes)
	}
	hb, err := ForHost(b.snap, "h2")
	if err != nil {
		t.Fatal(err)
	}
	want := "host h2\nrouter-id 192.168.1.12\nannounce fd00:1234:5678:1::/64\n" +
		"peer tor1 192.168.1.1 as 65101\npeer tor4 192.168.1.4 as 65104\npeer tor1 fd00:1::1 as 65101\naccept fd00:1234:5678::/48\n"
	if got := hb.String(); got != want {
		t.Errorf("h2's BGP:\n%s\nwant (tor4, IPv4 only, no problem):\n%s", got, want)
	}
}

package hoststate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/plan"
)

// lab builds snapshots: one network "net1" 10.0.0.0/8 with host 8 | tenant 4
// | segment 4 | endpoint 8, hosts h1..hN at 192.168.0.i.
type lab struct {
	t    testing.TB
	snap api.Snapshot
	plan *plan.Plan
}

func newLab(t testing.TB, hosts int) *lab {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, plan: p}
	l.snap.Networks = []api.Network{n}
	for i := 1; i <= hosts; i++ {
		l.addHost(fmt.Sprintf("h%d", i), uint64(i))
	}
	return l
}

func (l *lab) addHost(name string, id uint64) {
	c, err := l.plan.HostCIDR(plan.Loc{Host: id})
	if err != nil {
		l.t.Fatal(err)
	}
	l.snap.Hosts = append(l.snap.Hosts, api.Host{
		Name: name, IP: netip.AddrFrom4([4]byte{192, 168, byte(id >> 8), byte(id)}),
		Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: id}, CIDR: c}},
	})
}

func (l *lab) tenant(name string, id uint64, isolation string, segments ...string) {
	l.snap.Tenants = append(l.snap.Tenants, api.Tenant{Name: name, ID: id, Isolation: isolation})
	for i, s := range segments {
		l.snap.Segments = append(l.snap.Segments, api.Segment{Tenant: name, Name: s, ID: uint64(i)})
	}
}

// endpoint allocates endpoint ep of (tenant, segment) on host hostID.
func (l *lab) endpoint(hostID, tenant, segment, ep uint64) api.Address {
	a := l.address(hostID, tenant, segment, ep)
	l.snap.Addresses = append(l.snap.Addresses, a)
	return a
}

// address returns endpoint ep of (tenant, segment) on host hostID without adding it.
func (l *lab) address(hostID, tenant, segment, ep uint64) api.Address {
	ip, err := l.plan.Address(plan.Loc{Host: hostID}, tenant, segment, ep)
	if err != nil {
		l.t.Fatal(err)
	}
	var tn, sn string
	for _, t := range l.snap.Tenants {
		if t.ID == tenant {
			tn = t.Name
		}
	}
	for _, s := range l.snap.Segments {
		if s.Tenant == tn && s.ID == segment {
			sn = s.Name
		}
	}
	a := api.Address{
		Name: fmt.Sprintf("c%d-%d-%d-%d:eth0", hostID, tenant, segment, ep), IP: ip, Network: "net1",
		Host: fmt.Sprintf("h%d", hostID), Tenant: tn, Segment: sn,
		Interface: fmt.Sprintf("romana%09x", hostID<<24|tenant<<16|segment<<8|ep),
	}
	return a
}

func (l *lab) compute(host string, mode Mode) State {
	l.t.Helper()
	st, err := Compute(l.snap, host, Options{Mode: mode})
	if err != nil {
		l.t.Fatal(err)
	}
	return st
}

// demoLab: 3 hosts; acme (tenant mode), beta (segment mode, 2 segments),
// open (none); endpoints spread over the hosts.
func demoLab(t testing.TB) *lab {
	l := newLab(t, 3)
	l.tenant("acme", 1, "", "default")
	l.tenant("beta", 2, api.IsolationSegment, "web", "db")
	l.tenant("open", 3, api.IsolationNone, "default")
	for h := uint64(1); h <= 3; h++ {
		l.endpoint(h, 1, 0, 1)
		l.endpoint(h, 2, 0, 1)
		l.endpoint(h, 2, 1, 1)
		l.endpoint(h, 3, 0, 1)
	}
	return l
}

func TestGolden(t *testing.T) {
	l := demoLab(t)
	expect.Golden(t, "flat-h1.txt", l.compute("h1", ModeFlat).String())
	expect.Golden(t, "fabric-h2.txt", l.compute("h2", ModeFabric).String())

	// Two networks, one of them restricted to a tenant, and IPv6.
	l.snap.Networks = append(l.snap.Networks, api.Network{Name: "v6", CIDR: "fd00::/48",
		Fields:  []plan.Field{{Name: "rack", Bits: 4}, {Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}},
		Tenants: []string{"beta"}})
	p6, err := plan.Parse(l.snap.Networks[1].Spec())
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.snap.Hosts {
		loc := plan.Loc{Groups: []uint64{1}, Host: uint64(i + 1)}
		c, err := p6.HostCIDR(loc)
		if err != nil {
			t.Fatal(err)
		}
		l.snap.Hosts[i].Slots = append(l.snap.Hosts[i].Slots, api.HostSlot{Network: "v6", Loc: loc, CIDR: c})
	}
	// An IPv6 endpoint on h1 (its veth forwards IPv6: force_forwarding)
	// and one on h2.
	for h := uint64(1); h <= 2; h++ {
		ip, err := p6.Address(plan.Loc{Groups: []uint64{1}, Host: h}, 2, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("v6ep%d", h)
		l.snap.Addresses = append(l.snap.Addresses, api.Address{Name: name, IP: ip, Network: "v6", Host: fmt.Sprintf("h%d", h),
			Tenant: "beta", Segment: "web", Interface: "rv-" + name})
	}
	expect.Golden(t, "two-networks-h1.txt", l.compute("h1", ModeFlat).String())
}

func TestUnknownHost(t *testing.T) {
	l := demoLab(t)
	if _, err := Compute(l.snap, "nope", Options{}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("Compute for an unknown host: err = %v, want one naming the host", err)
	}
	if _, err := Compute(l.snap, "h1", Options{Mode: "overlay"}); err == nil {
		t.Fatal("Compute with mode overlay: no error")
	}
}

// One route per remote host, however many endpoints they run; local
// endpoints get their /32s.
func TestRoutesPerRemoteHost(t *testing.T) {
	l := newLab(t, 4)
	l.tenant("acme", 1, "", "default")
	for ep := uint64(1); ep <= 200; ep++ {
		l.endpoint(2, 1, 0, ep)
		l.endpoint(3, 1, 0, ep)
	}
	l.endpoint(1, 1, 0, 7)
	st := l.compute("h1", ModeFlat)
	var got []string
	for _, r := range st.Routes {
		got = append(got, r.String())
	}
	want := []string{
		"10.1.16.7/32 dev romana001010007 scope link",
		"10.2.0.0/16 via 192.168.0.2",
		"10.3.0.0/16 via 192.168.0.3",
		"10.4.0.0/16 via 192.168.0.4",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := l.compute("h1", ModeFabric); len(st.Routes) != 1 {
		t.Fatalf("fabric mode routes: %v, want only the local endpoint", st.Routes)
	}
	if len(st.Problems) != 0 {
		t.Fatalf("problems: %v", st.Problems)
	}
}

// The firewall depends on tenants and segments only: adding endpoints or
// hosts leaves it identical.
func TestFirewallIndependentOfEndpointsAndHosts(t *testing.T) {
	small := demoLab(t)
	big := demoLab(t)
	for h := uint64(4); h <= 40; h++ {
		big.addHost(fmt.Sprintf("h%d", h), h)
	}
	for h := uint64(1); h <= 40; h++ {
		for ep := uint64(2); ep <= 50; ep++ {
			big.endpoint(h, 1, 0, ep)
			big.endpoint(h, 2, 1, ep)
		}
	}
	a, b := small.compute("h1", ModeFlat).Firewall, big.compute("h1", ModeFlat).Firewall
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("firewall changed with endpoints/hosts:\n%s\nvs\n%s", a, b)
	}
}

// Input order does not matter.
func TestDeterministic(t *testing.T) {
	l := demoLab(t)
	want := l.compute("h2", ModeFlat)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		s := l.snap
		s.Hosts = shuffled(r, s.Hosts)
		s.Tenants = shuffled(r, s.Tenants)
		s.Segments = shuffled(r, s.Segments)
		s.Addresses = shuffled(r, s.Addresses)
		got, err := Compute(s, "h2", Options{Mode: ModeFlat})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("shuffled inputs gave a different state:\n%s\nvs\n%s", got, want)
		}
	}
}

func shuffled[T any](r *rand.Rand, in []T) []T {
	out := append([]T(nil), in...)
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// Bad objects are skipped and reported; everything else is still computed.
func TestProblemsDoNotStopTheRest(t *testing.T) {
	l := demoLab(t)
	good := l.compute("h1", ModeFlat)
	bad := l.address(1, 1, 0, 9)
	bad.IP = netip.MustParseAddr("172.16.0.1")
	bad.Name = "outside"
	dup := l.address(1, 1, 0, 1)
	dup.Name = "dup"
	dup.Interface = "romanadup"
	l.snap.Addresses = append(l.snap.Addresses, bad, dup,
		api.Address{Name: "badif", IP: netip.MustParseAddr("10.1.16.20"), Network: "net1", Host: "h1", Tenant: "acme", Interface: "bad/name"},
		api.Address{Name: "nonet", IP: netip.MustParseAddr("10.1.16.21"), Network: "gone", Host: "h1", Tenant: "acme", Interface: "romanax"},
		api.Address{Name: "noif", IP: netip.MustParseAddr("10.1.16.22"), Network: "net1", Host: "h1", Tenant: "acme"})
	l.snap.Networks = append(l.snap.Networks, api.Network{Name: "broken", CIDR: "10.0.0.1/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}})
	l.snap.Tenants = append(l.snap.Tenants,
		api.Tenant{Name: "huge", ID: 99}, // does not fit 4 tenant bits
		api.Tenant{Name: "weird", ID: 5, Isolation: "bogus"},
		api.Tenant{Name: "clone", ID: 1})
	l.snap.Segments = append(l.snap.Segments, api.Segment{Tenant: "ghost", Name: "x", ID: 1},
		api.Segment{Tenant: "beta", Name: "big", ID: 40})
	l.snap.Hosts = append(l.snap.Hosts, api.Host{Name: "noip", Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: 9}, CIDR: netip.MustParsePrefix("10.9.0.0/16")}}},
		api.Host{Name: "liar", IP: netip.MustParseAddr("192.168.0.10"), Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: 10}, CIDR: netip.MustParsePrefix("10.11.0.0/16")}}})

	st := l.compute("h1", ModeFlat)
	expect.Golden(t, "problems-h1.txt", st.String())
	// Everything that was fine before is still there.
	for _, r := range good.Routes {
		found := false
		for _, r2 := range st.Routes {
			found = found || r == r2
		}
		if !found {
			t.Errorf("route %s lost because of bad objects", r)
		}
	}
	for _, c := range good.Firewall.Chains {
		c2 := st.Firewall.Chain(c.Name)
		if c2 == nil || !reflect.DeepEqual(c.Rules, c2.Rules) {
			t.Errorf("chain %s changed because of bad objects", c.Name)
		}
	}
	wantProblems := []string{`address "outside"`, `address "dup"`, `address "badif"`, `address "nonet"`, `network "broken"`,
		`tenant "huge"`, `tenant "weird"`, `tenant "clone"`, `tenant "ghost"`, `segment "big"`, `host "noip"`, `host "liar"`}
	all := strings.Join(st.Problems, "\n")
	for _, w := range wantProblems {
		if !strings.Contains(all, w) {
			t.Errorf("no problem mentions %s; problems:\n%s", w, all)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeFlat, "flat": ModeFlat, "fabric": ModeFabric} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("vxlan"); err == nil {
		t.Error("ParseMode(vxlan): no error")
	}
}

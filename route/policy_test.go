package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/hoststate"
)

// chainRules and chainRoutes are a desired state with every kind of chain
// route: to a local service function (onlink through its veth), to another
// host, a fail-closed blackhole, and IPv6.
var (
	chainRules = []hoststate.IPRule{
		{Mark: hoststate.Mark(1, 1), Table: hoststate.RouteTable(1, 1)},
		{Mark: hoststate.Mark(1, 2), Table: hoststate.RouteTable(1, 2)},
		{Mark: hoststate.Mark(2, 1), Table: hoststate.RouteTable(2, 1)},
		{Mark: hoststate.Mark(3, 1), Table: hoststate.RouteTable(3, 1)},
	}
	chainRoutes = []hoststate.TableRoute{
		{Table: hoststate.RouteTable(1, 1), Via: addr("10.1.48.1"), Dev: "veth1"},
		{Table: hoststate.RouteTable(1, 2), Via: addr("192.168.51.2")},
		{Table: hoststate.RouteTable(2, 1), Blackhole: true},
		{Table: hoststate.RouteTable(3, 1), Via: addr("fd00::1"), V6: true},
	}
	// foreignRules are not ours: another priority, another protocol at our
	// priority in our tables (one the same as a rule we want), and one of
	// our protocol at our priority outside the chain tables.
	foreignRules = []KernelRule{
		{Priority: 500, Mark: 0x4000, Mask: 0xffffffff, Table: 100},
		{Priority: 1000, Mark: 0x10000041, Mask: hoststate.MarkMask, Table: 20065},
		{Priority: 1000, Mark: hoststate.Mark(1, 2), Mask: hoststate.MarkMask, Table: hoststate.RouteTable(1, 2), Protocol: 4},
		{Priority: 1000, Mark: 0x4001, Mask: 0xffffffff, Table: 100, Protocol: Protocol},
	}
	// foreignRoutes are not ours: in another table, in a chain table to
	// another destination with another protocol, and of our protocol
	// outside the chain tables.
	foreignRoutes = []KernelTableRoute{
		{TableRoute: hoststate.TableRoute{Table: 100, Via: addr("192.168.51.254")}, Protocol: 3},
		{TableRoute: hoststate.TableRoute{Table: hoststate.RouteTable(1, 1), Via: addr("192.168.51.254")}, Dst: pfx("10.9.0.0/16"), Protocol: 4},
		{TableRoute: hoststate.TableRoute{Table: 100, Blackhole: true}, Dst: pfx("10.8.0.0/16"), Protocol: Protocol},
	}
)

const (
	foreignState = `rule priority 500 fwmark 0x4000/0xffffffff lookup 100 proto 0
rule priority 1000 fwmark 0x10000012/0x1000ffff lookup 20018 proto 4
rule priority 1000 fwmark 0x10000041/0x1000ffff lookup 20065 proto 0
rule priority 1000 fwmark 0x4001/0xffffffff lookup 100 proto 190
route table 100 default via 192.168.51.254 proto 3
route table 100 blackhole 10.8.0.0/16 proto 190
route table 20017 10.9.0.0/16 via 192.168.51.254 proto 4
`
	// chainState is foreignState with chainRules and chainRoutes applied.
	chainState = `rule priority 500 fwmark 0x4000/0xffffffff lookup 100 proto 0
rule -6 priority 1000 fwmark 0x10000031/0x1000ffff lookup 20049 proto 190
rule priority 1000 fwmark 0x10000011/0x1000ffff lookup 20017 proto 190
rule priority 1000 fwmark 0x10000012/0x1000ffff lookup 20018 proto 190
rule priority 1000 fwmark 0x10000012/0x1000ffff lookup 20018 proto 4
rule priority 1000 fwmark 0x10000021/0x1000ffff lookup 20033 proto 190
rule priority 1000 fwmark 0x10000041/0x1000ffff lookup 20065 proto 0
rule priority 1000 fwmark 0x4001/0xffffffff lookup 100 proto 190
route table 100 default via 192.168.51.254 proto 3
route table 100 blackhole 10.8.0.0/16 proto 190
route table 20017 default via 10.1.48.1 dev veth1 proto 190
route table 20017 10.9.0.0/16 via 192.168.51.254 proto 4
route table 20018 default via 192.168.51.2 proto 190
route table 20033 blackhole default proto 190
route table 20049 default6 via fd00::1 proto 190
`
)

// newPolicyFake returns a Policy on a fake kernel holding the foreign rules
// and routes and the link veth1, and the buffer its log goes to.
func newPolicyFake(t *testing.T) (*Policy, *Fake, *bytes.Buffer) {
	t.Helper()
	_, f := NewFake(nil)
	f.AddLink("veth1", "veth")
	for _, r := range foreignRules {
		f.AddRule(r)
	}
	for _, r := range foreignRoutes {
		f.AddTableRoute(r)
	}
	if got := f.PolicyString(); got != foreignState {
		t.Fatalf("fake kernel before any sync:\n%swant\n%s", got, foreignState)
	}
	var logs bytes.Buffer
	return NewFakePolicy(f, slog.New(slog.NewTextHandler(&logs, nil))), f, &logs
}

func TestPolicyOnFake(t *testing.T) {
	ctx := context.Background()
	p, f, logs := newPolicyFake(t)
	sync := func(what, want string) {
		t.Helper()
		if err := p.Sync(ctx, chainRules, chainRoutes); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := f.PolicyString(); got != want {
			t.Fatalf("%s:\n%swant\n%s", what, got, want)
		}
	}
	sync("first sync", chainState)
	logs.Reset()
	sync("second sync", chainState)
	if logs.Len() != 0 {
		t.Fatalf("a sync when in sync changed something:\n%s", logs)
	}

	// Drift: a rule and a route of ours deleted, a route of ours changed, a
	// stale rule of ours, a duplicate of one of ours, one with the wrong
	// mask, and a route of ours in a chain table no longer desired.
	f.DeleteRule(KernelRule{Priority: 1000, Mark: hoststate.Mark(1, 1), Mask: hoststate.MarkMask, Table: hoststate.RouteTable(1, 1), Protocol: Protocol})
	f.DeleteTableRoute(hoststate.RouteTable(2, 1), pfx("0.0.0.0/0"))
	f.AddTableRoute(KernelTableRoute{TableRoute: hoststate.TableRoute{Table: hoststate.RouteTable(1, 2), Via: addr("192.168.51.9")}, Protocol: Protocol})
	f.AddRule(KernelRule{Priority: 1000, Mark: hoststate.Mark(4, 1), Mask: hoststate.MarkMask, Table: hoststate.RouteTable(4, 1), Protocol: Protocol})
	f.AddRule(KernelRule{Priority: 1000, Mark: hoststate.Mark(1, 2), Mask: hoststate.MarkMask, Table: hoststate.RouteTable(1, 2), Protocol: Protocol})
	f.DeleteRule(KernelRule{Priority: 1000, Mark: hoststate.Mark(2, 1), Mask: hoststate.MarkMask, Table: hoststate.RouteTable(2, 1), Protocol: Protocol})
	f.AddRule(KernelRule{Priority: 1000, Mark: hoststate.Mark(2, 1), Mask: 0xffffffff, Table: hoststate.RouteTable(2, 1), Protocol: Protocol})
	f.AddTableRoute(KernelTableRoute{TableRoute: hoststate.TableRoute{Table: hoststate.RouteTable(4, 1), Blackhole: true}, Protocol: Protocol})
	sync("after drift", chainState)

	// A missing device is an error wrapping ErrLinkNotFound; the rest is
	// still applied.
	f.DeleteLink("veth1")
	err := p.Sync(ctx, chainRules, chainRoutes)
	if !errors.Is(err, ErrLinkNotFound) {
		t.Fatalf("sync with veth1 gone: %v, want ErrLinkNotFound", err)
	}
	if got, want := f.PolicyString(), strings.Replace(chainState, "route table 20017 default via 10.1.48.1 dev veth1 proto 190\n", "", 1); got != want {
		t.Fatalf("sync with veth1 gone:\n%swant\n%s", got, want)
	}
	f.AddLink("veth1", "veth")
	sync("veth1 back", chainState)

	// A failing kernel: every failure is reported.
	f.DeleteRule(KernelRule{Priority: 1000, Mark: hoststate.Mark(1, 1), Mask: hoststate.MarkMask, Table: hoststate.RouteTable(1, 1), Protocol: Protocol})
	f.SetFail(errors.New("boom"))
	if err := p.Sync(ctx, chainRules, chainRoutes); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("failing kernel: %v", err)
	}
	f.SetFail(nil)
	sync("kernel back", chainState)

	// Cleanup leaves only the foreign state.
	if err := p.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.PolicyString(); got != foreignState {
		t.Fatalf("after Cleanup:\n%swant\n%s", got, foreignState)
	}
}

// TestPolicyReconcilesAnyState starts Policy on random kernel states (rules
// and routes of ours and others', of both families, stale, duplicated, in
// and out of the chain tables) and moves it through random desired states:
// after each Sync the rules and routes Policy owns are exactly the desired
// ones, everything else is as it was, and a second Sync changes nothing.
func TestPolicyReconcilesAnyState(t *testing.T) {
	ctx := context.Background()
	for seed := range 300 {
		rng := rand.New(rand.NewPCG(uint64(seed), 0))
		_, f := NewFake(nil)
		for _, l := range policyLinks {
			f.AddLink(l, "veth")
		}
		for range rng.IntN(12) {
			f.AddRule(randomRule(rng))
		}
		for range rng.IntN(12) {
			f.AddTableRoute(randomTableRoute(rng))
		}
		foreign := foreignPolicy(f)
		p := NewFakePolicy(f, nil)
		for step := range 4 {
			rules, routes := randomDesired(rng)
			if step == 3 {
				rules, routes = nil, nil // Cleanup
			}
			err := p.Sync(ctx, rules, routes)
			what := fmt.Sprintf("seed %d step %d", seed, step)
			held := checkPolicy(t, what, f, foreign, rules, routes)
			if (err != nil) != (len(held) > 0) {
				t.Fatalf("%s: Sync returned %v; foreign routes hold %v", what, err, held)
			}
			for _, h := range held {
				if !strings.Contains(err.Error(), h.String()) {
					t.Fatalf("%s: Sync's error does not name %s: %v", what, h, err)
				}
			}
			before := f.PolicyString()
			p.Sync(ctx, rules, routes)
			if after := f.PolicyString(); after != before {
				t.Fatalf("%s: a second sync changed\n%sto\n%s", what, before, after)
			}
		}
	}
}

var (
	policyLinks = []string{"veth1", "veth2"}
	// policyTables are a few chain tables and two others.
	policyTables = []int{hoststate.RouteTable(1, 1), hoststate.RouteTable(1, 2), hoststate.RouteTable(2, 1),
		hoststate.RouteTable(4095, 15), 100, 254 + 1}
	policyVia = []netip.Addr{addr("10.1.48.1"), addr("192.168.51.2"), addr("fd00::1"), addr("fd00::2")}
)

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// owned reports whether Policy owns a rule: ours, at our priority, into a
// chain table.
func (r KernelRule) owned() bool {
	return r.Protocol == Protocol && r.Priority == hoststate.RulePriority && chainTable(r.Table)
}

// owned reports whether Policy owns a route: ours, in a chain table.
func (r KernelTableRoute) owned() bool { return r.Protocol == Protocol && chainTable(r.Table) }

func randomRule(rng *rand.Rand) KernelRule {
	t := pick(rng, policyTables...)
	return KernelRule{
		V6:       rng.IntN(4) == 0,
		Priority: pick(rng, 500, hoststate.RulePriority, hoststate.RulePriority, 1001),
		Mark:     pick(rng, uint32(t-hoststate.TableBase)|hoststate.MarkBit, 0x4000),
		Mask:     pick(rng, hoststate.MarkMask, hoststate.MarkMask, 0xffffffff, 0),
		Table:    t,
		Protocol: pick(rng, 0, 4, Protocol, Protocol),
	}
}

func randomTableRoute(rng *rand.Rand) KernelTableRoute {
	r := KernelTableRoute{TableRoute: hoststate.TableRoute{Table: pick(rng, policyTables...)}, Protocol: pick(rng, 3, 4, Protocol, Protocol)}
	r.Via = pick(rng, policyVia...)
	r.V6 = r.Via.Is6()
	switch rng.IntN(4) {
	case 0:
		r.Blackhole, r.Via = true, netip.Addr{}
	case 1:
		r.Dev = pick(rng, policyLinks...)
	}
	r.Dst = defaultDst(r.TableRoute)
	if rng.IntN(3) == 0 {
		r.Dst = pick(rng, pfx("10.9.0.0/16"), pfx("fd00:9::/32"))
		r.V6 = r.Dst.Addr().Is6()
	}
	return r
}

// randomDesired returns a desired state as hoststate makes one: a rule and
// a default route per chain table, for a random set of tables.
func randomDesired(rng *rand.Rand) ([]hoststate.IPRule, []hoststate.TableRoute) {
	var rules []hoststate.IPRule
	var routes []hoststate.TableRoute
	for _, t := range policyTables {
		if !chainTable(t) || rng.IntN(2) == 0 {
			continue
		}
		rules = append(rules, hoststate.IPRule{Mark: uint32(t-hoststate.TableBase) | hoststate.MarkBit, Table: t})
		r := hoststate.TableRoute{Table: t, Via: pick(rng, policyVia...)}
		r.V6 = r.Via.Is6()
		switch rng.IntN(3) {
		case 0:
			r.Blackhole, r.Via = true, netip.Addr{}
		case 1:
			r.Dev = pick(rng, policyLinks...)
		}
		routes = append(routes, r)
	}
	return rules, routes
}

// foreignPolicy returns the rules and routes of f that Policy does not own.
func foreignPolicy(f *Fake) string {
	var b strings.Builder
	for _, r := range f.Rules() {
		if !r.owned() {
			b.WriteString("rule " + r.String() + "\n")
		}
	}
	for _, r := range f.TableRoutes() {
		if !r.owned() {
			b.WriteString("route " + r.String() + "\n")
		}
	}
	return b.String()
}

// checkPolicy fails the test unless f holds foreign as it was, and as the
// rules and routes Policy owns exactly the desired ones, but for desired
// routes whose place (their table's default destination) a foreign route
// holds: it returns those foreign routes. (A desired route without a
// device is installed by any route of ours with its next hop: the kernel
// lists such a route with the device it found.)
func checkPolicy(t *testing.T, what string, f *Fake, foreign string, rules []hoststate.IPRule, routes []hoststate.TableRoute) (held []KernelTableRoute) {
	t.Helper()
	if got := foreignPolicy(f); got != foreign {
		t.Fatalf("%s: foreign rules and routes changed from\n%sto\n%s", what, foreign, got)
	}
	live := f.TableRoutes()
	var ours []KernelTableRoute
	for _, l := range live {
		if l.owned() {
			ours = append(ours, l)
		}
	}
	v6 := map[int]bool{}
	for _, r := range routes {
		v6[r.Table] = r.V6
		place := placeOf(r)
		if i := slices.IndexFunc(live, func(l KernelTableRoute) bool {
			return l.Table == place.Table && l.Dst == place.Dst && !l.owned()
		}); i >= 0 {
			held = append(held, live[i])
			continue
		}
		i := slices.IndexFunc(ours, func(l KernelTableRoute) bool { return installed(r, l) })
		if i < 0 {
			t.Fatalf("%s: desired route %s is not installed:\n%s", what, r, f.PolicyString())
		}
		ours = slices.Delete(ours, i, i+1)
	}
	if len(ours) > 0 {
		t.Fatalf("%s: routes of ours not desired: %v\n%s", what, ours, f.PolicyString())
	}
	var got, want []string
	for _, r := range rules {
		k := KernelRule{V6: v6[r.Table], Priority: hoststate.RulePriority, Mark: r.Mark, Mask: hoststate.MarkMask, Table: r.Table, Protocol: Protocol}
		want = append(want, k.String())
	}
	for _, r := range f.Rules() {
		if r.owned() {
			got = append(got, r.String())
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: Policy's rules are\n%s\nwant\n%s\nkernel:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"), f.PolicyString())
	}
	return held
}

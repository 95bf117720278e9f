package route

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
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

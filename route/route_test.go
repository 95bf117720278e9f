package route

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/romana/romana/hoststate"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestDiff(t *testing.T) {
	ep := func(dst, dev string) hoststate.Route { return hoststate.Route{Dst: pfx(dst), Dev: dev} }
	via := func(dst, gw string) hoststate.Route { return hoststate.Route{Dst: pfx(dst), Via: addr(gw)} }
	for _, c := range []struct {
		name              string
		live, desired     []hoststate.Route
		add, replace, del []hoststate.Route
	}{
		{name: "empty"},
		{name: "all new", desired: []hoststate.Route{via("10.2.0.0/16", "192.168.0.2"), ep("10.1.0.5/32", "v1")},
			add: []hoststate.Route{ep("10.1.0.5/32", "v1"), via("10.2.0.0/16", "192.168.0.2")}},
		{name: "in sync", live: []hoststate.Route{ep("10.1.0.5/32", "v1")}, desired: []hoststate.Route{ep("10.1.0.5/32", "v1")}},
		{name: "moved", live: []hoststate.Route{ep("10.1.0.5/32", "v1"), via("10.2.0.0/16", "192.168.0.2")},
			desired: []hoststate.Route{ep("10.1.0.5/32", "v2"), via("10.2.0.0/16", "192.168.0.9")},
			replace: []hoststate.Route{ep("10.1.0.5/32", "v2"), via("10.2.0.0/16", "192.168.0.9")}},
		{name: "dev to via", live: []hoststate.Route{ep("10.3.0.0/16", "v1")}, desired: []hoststate.Route{via("10.3.0.0/16", "192.168.0.3")},
			replace: []hoststate.Route{via("10.3.0.0/16", "192.168.0.3")}},
		{name: "stale", live: []hoststate.Route{ep("10.1.0.6/32", "v1"), via("10.4.0.0/16", "192.168.0.4")},
			del: []hoststate.Route{ep("10.1.0.6/32", "v1"), via("10.4.0.0/16", "192.168.0.4")}},
	} {
		add, replace, del := Diff(c.live, c.desired)
		if !reflect.DeepEqual(add, c.add) || !reflect.DeepEqual(replace, c.replace) || !reflect.DeepEqual(del, c.del) {
			t.Errorf("%s: Diff = add %v replace %v del %v; want %v %v %v", c.name, add, replace, del, c.add, c.replace, c.del)
		}
	}
}

func TestManagerOnFake(t *testing.T) {
	ctx := context.Background()
	m, f := NewFake(nil)
	f.AddLink("romana1", "veth")
	foreign := hoststate.Route{Dst: pfx("10.99.0.0/16"), Via: addr("192.168.0.254")}
	f.AddRoute(foreign, 4) // proto static
	desired := []hoststate.Route{
		{Dst: pfx("10.1.0.5/32"), Dev: "romana1"},
		{Dst: pfx("10.1.0.6/32"), Dev: "romana2"}, // its veth is not there yet
		{Dst: pfx("10.2.0.0/16"), Via: addr("192.168.0.2")},
	}
	ch, err := m.SyncRoutes(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Added) != 2 || len(ch.Pending) != 1 || ch.Pending[0].Dev != "romana2" {
		t.Fatalf("first sync: %+v", ch)
	}
	f.AddLink("romana2", "veth")
	if ch, err = m.SyncRoutes(ctx, desired); err != nil || len(ch.Added) != 1 || len(ch.Pending) != 0 {
		t.Fatalf("after the veth appeared: %+v %v", ch, err)
	}
	if ch, err = m.SyncRoutes(ctx, desired); err != nil || !ch.Empty() {
		t.Fatalf("sync when in sync changed something: %+v %v", ch, err)
	}
	// Drift: a route deleted behind our back is restored.
	f.DeleteRoute(pfx("10.2.0.0/16"))
	if ch, err = m.SyncRoutes(ctx, desired); err != nil || len(ch.Added) != 1 {
		t.Fatalf("after drift: %+v %v", ch, err)
	}
	// A host goes away: its route is deleted; the foreign route stays.
	if ch, err = m.SyncRoutes(ctx, desired[:2]); err != nil || len(ch.Deleted) != 1 {
		t.Fatalf("after removal: %+v %v", ch, err)
	}
	var got []hoststate.Route
	for _, r := range f.Routes() {
		if r.Protocol == Protocol {
			got = append(got, r.Route)
		}
	}
	if !reflect.DeepEqual(got, desired[:2]) {
		t.Fatalf("our routes %v, want %v", got, desired[:2])
	}
	// Errors are reported, and do not stop the other routes.
	f.SetFail(errors.New("boom"))
	if _, err := m.SyncRoutes(ctx, desired); err == nil {
		t.Fatal("failing kernel: no error")
	}
	f.SetFail(nil)

	gw := hoststate.Gateway{Link: hoststate.GatewayLink, Addr: netip.PrefixFrom(hoststate.GatewayAddr, 32)}
	for i := 0; i < 2; i++ {
		if err := m.EnsureGateway(ctx, gw); err != nil {
			t.Fatal(err)
		}
	}
	if l, ok := f.Link(gw.Link); !ok || !l.Up || len(l.Addrs) != 1 || l.Addrs[0] != gw.Addr {
		t.Fatalf("gateway link: %+v %v", l, ok)
	}
	n, err := m.SetSysctls(ctx, []hoststate.Sysctl{{Key: "net.ipv4.ip_forward", Value: "1"}})
	if err != nil || n != 1 || f.Sysctl("net.ipv4.ip_forward") != "1" {
		t.Fatalf("SetSysctls: %d %v", n, err)
	}
	if n, err := m.SetSysctls(ctx, []hoststate.Sysctl{{Key: "net.ipv4.ip_forward", Value: "1"}}); err != nil || n != 0 {
		t.Fatalf("SetSysctls again: %d %v", n, err)
	}

	if err := m.Cleanup(ctx, gw); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Link(gw.Link); ok {
		t.Error("gateway link survived Cleanup")
	}
	if rs := f.Routes(); len(rs) != 1 || rs[0].Route != foreign {
		t.Errorf("after Cleanup the table is %v, want only the foreign route", rs)
	}
}

// A foreign route (another protocol) holding a desired destination is
// never replaced or deleted: the conflict is reported at every sync, and
// our route is installed once the foreign one is gone.
func TestForeignRouteNotOverwrittenOnFake(t *testing.T) {
	ctx := context.Background()
	m, f := NewFake(nil)
	admin := hoststate.Route{Dst: pfx("10.2.0.0/16"), Via: addr("192.168.0.254")}
	f.AddRoute(admin, 4) // proto static
	desired := []hoststate.Route{{Dst: pfx("10.2.0.0/16"), Via: addr("192.168.0.2")}, {Dst: pfx("10.3.0.0/16"), Via: addr("192.168.0.3")}}
	for i := range 2 {
		ch, err := m.SyncRoutes(ctx, desired)
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.Conflicts) != 1 || ch.Conflicts[0].Route != desired[0] || !strings.Contains(ch.Conflicts[0].Foreign, "via 192.168.0.254 proto 4") {
			t.Fatalf("sync %d: conflicts %v", i, ch.Conflicts)
		}
		if rs := f.Routes(); len(rs) != 2 || rs[0].Route != admin || rs[0].Protocol != 4 {
			t.Fatalf("sync %d: table %v, want the administrator's route kept", i, rs)
		}
	}
	// Removal of every route of ours leaves the foreign one.
	if _, err := m.SyncRoutes(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if rs := f.Routes(); len(rs) != 1 || rs[0].Route != admin {
		t.Fatalf("after removal: %v", rs)
	}
	// The administrator removes theirs: ours goes in, no conflict left.
	f.DeleteRoute(admin.Dst)
	ch, err := m.SyncRoutes(ctx, desired)
	if err != nil || len(ch.Conflicts) != 0 || len(ch.Added) != 2 {
		t.Fatalf("after the foreign route went: %+v %v", ch, err)
	}
}

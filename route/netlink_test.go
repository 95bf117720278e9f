package route_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim/simtest"
)

// The real adapter in a simulated host: our routes converge, foreign
// routes and links survive syncs and Cleanup, sysctls are set in the
// host's namespace only.
func TestNetlinkInNamespace(t *testing.T) {
	simtest.Require(t)
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.50.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	ep, err := lab.AddEndpoint(ctx, h, "ep1", netip.MustParseAddr("10.1.0.5"), "")
	if err != nil {
		t.Fatal(err)
	}
	// Foreign routes: one elsewhere, two holding destinations we want (an
	// administrator's at metric 0, another daemon's at metric 100).
	for _, cmd := range [][]string{
		{"ip", "route", "add", "10.99.0.0/16", "via", "192.168.50.254", "proto", "static"},
		{"ip", "route", "add", "10.4.0.0/16", "via", "192.168.50.254", "proto", "static"},
		{"ip", "route", "add", "10.5.0.0/16", "via", "192.168.50.253", "proto", "bird", "metric", "100"},
	} {
		if _, err := h.Exec(ctx, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Exec(ctx, "ip", "link", "add", "foreign0", "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	var m *route.Manager
	do := func(f func() error) {
		t.Helper()
		if err := h.Do(f); err != nil {
			t.Fatal(err)
		}
	}
	do(func() (err error) { m, err = route.New(nil); return err })

	gw := hoststate.Gateway{Link: hoststate.GatewayLink, Addr: netip.PrefixFrom(hoststate.GatewayAddr, 32)}
	desired := []hoststate.Route{
		{Dst: netip.MustParsePrefix("10.1.0.5/32"), Dev: ep.HostIface},
		{Dst: netip.MustParsePrefix("10.1.0.6/32"), Dev: "romanagone"},
		{Dst: netip.MustParsePrefix("10.2.0.0/16"), Via: netip.MustParseAddr("192.168.50.2")},
		{Dst: netip.MustParsePrefix("10.3.0.0/16"), Via: netip.MustParseAddr("192.168.50.3")},
		// Held by foreign routes: the kernel's connected subnet, and the two above.
		{Dst: netip.MustParsePrefix("192.168.50.0/24"), Via: netip.MustParseAddr("192.168.50.7")},
		{Dst: netip.MustParsePrefix("10.4.0.0/16"), Via: netip.MustParseAddr("192.168.50.4")},
		{Dst: netip.MustParsePrefix("10.5.0.0/16"), Via: netip.MustParseAddr("192.168.50.5")},
	}
	foreign := func(what string) {
		t.Helper()
		for dst, want := range map[string]string{
			"192.168.50.0/24": "192.168.50.0/24 dev eth0 proto kernel scope link src 192.168.50.1 \n",
			"10.4.0.0/16":     "10.4.0.0/16 via 192.168.50.254 dev eth0 proto static \n",
			"10.5.0.0/16":     "10.5.0.0/16 via 192.168.50.253 dev eth0 proto bird metric 100 \n",
		} {
			if out, err := h.Exec(ctx, "ip", "route", "show", "exact", dst); err != nil || out != want {
				t.Errorf("%s: routes to %s: %q (%v), want only the foreign %q", what, dst, out, err, want)
			}
		}
	}
	conflicts := func(what string, ch route.Changes) {
		t.Helper()
		var got []string
		for _, c := range ch.Conflicts {
			got = append(got, c.String())
		}
		want := []string{
			"10.4.0.0/16 via 192.168.50.4: destination held by foreign route 10.4.0.0/16 via 192.168.50.254 dev eth0 proto static",
			"10.5.0.0/16 via 192.168.50.5: destination held by foreign route 10.5.0.0/16 via 192.168.50.253 dev eth0 proto bird metric 100",
			"192.168.50.0/24 via 192.168.50.7: destination held by foreign route 192.168.50.0/24 dev eth0 proto kernel",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: conflicts\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	do(func() error {
		if err := m.EnsureGateway(ctx, gw); err != nil {
			return err
		}
		if _, err := m.SetSysctls(ctx, []hoststate.Sysctl{{Key: "net.ipv4.ip_forward", Value: "1"}}); err != nil {
			return err
		}
		ch, err := m.SyncRoutes(ctx, desired)
		if err == nil && (len(ch.Added) != 3 || len(ch.Pending) != 1) {
			t.Errorf("first sync: %+v", ch)
		}
		conflicts("first sync", ch)
		return err
	})
	foreign("first sync")
	want := "10.1.0.5 dev rv-ep1 scope link \n10.2.0.0/16 via 192.168.50.2 dev eth0 \n10.3.0.0/16 via 192.168.50.3 dev eth0 \n"
	if got := routes(t, h.Exec); got != want {
		t.Fatalf("routes with proto 190:\n%s\nwant:\n%s", got, want)
	}
	if out, _ := h.Exec(ctx, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "1" {
		t.Errorf("ip_forward in the host namespace = %q", out)
	}
	if out, _ := h.Exec(ctx, "ip", "-o", "addr", "show", "dev", hoststate.GatewayLink); !strings.Contains(out, "169.254.1.1/32") {
		t.Errorf("gateway link: %q", out)
	}

	// Drift: a route deleted, another replaced by hand.
	if _, err := h.Exec(ctx, "ip", "route", "del", "10.2.0.0/16"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Exec(ctx, "ip", "route", "replace", "10.3.0.0/16", "via", "192.168.50.9", "proto", "190"); err != nil {
		t.Fatal(err)
	}
	do(func() error {
		ch, err := m.SyncRoutes(ctx, desired)
		if err == nil && (len(ch.Added) != 1 || len(ch.Replaced) != 1) {
			t.Errorf("drift repair: %+v", ch)
		}
		conflicts("drift repair", ch)
		return err
	})
	foreign("drift repair")
	if got := routes(t, h.Exec); got != want {
		t.Fatalf("after drift repair:\n%s\nwant:\n%s", got, want)
	}
	// Stale routes go, and only ours.
	do(func() error {
		ch, err := m.SyncRoutes(ctx, desired[:2])
		if err == nil && len(ch.Deleted) != 2 {
			t.Errorf("removal: %+v", ch)
		}
		return err
	})
	if got := routes(t, h.Exec); got != "10.1.0.5 dev rv-ep1 scope link \n" {
		t.Fatalf("after removal: %q", got)
	}

	foreign("removal")
	do(func() error { return m.Cleanup(ctx, gw) })
	foreign("Cleanup")
	if got := routes(t, h.Exec); got != "" {
		t.Errorf("after Cleanup our routes are %q", got)
	}
	if out, err := h.Exec(ctx, "ip", "route", "show", "10.99.0.0/16"); err != nil || !strings.Contains(out, "via 192.168.50.254") {
		t.Errorf("foreign route after Cleanup: %q %v", out, err)
	}
	if _, err := h.Exec(ctx, "ip", "link", "show", "foreign0"); err != nil {
		t.Errorf("foreign link after Cleanup: %v", err)
	}
	if _, err := h.Exec(ctx, "ip", "link", "show", hoststate.GatewayLink); err == nil {
		t.Error("gateway link survived Cleanup")
	}
}

func routes(t *testing.T, exec func(context.Context, ...string) (string, error)) string {
	t.Helper()
	out, err := exec(context.Background(), "ip", "-4", "route", "show", "proto", "190")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A route through a device that exists but is not up yet (the CNI plugin
// creates an endpoint's veth, then brings it up) is pending, not an error
// (the kernel says ENETDOWN), and is added once the device is up.
func TestNetlinkDownLinkPending(t *testing.T) {
	simtest.Require(t)
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.51.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Exec(ctx, "ip", "link", "add", "rvdown", "type", "veth", "peer", "name", "rvdown-peer"); err != nil {
		t.Fatal(err)
	}
	desired := []hoststate.Route{{Dst: netip.MustParsePrefix("10.1.0.7/32"), Dev: "rvdown"}}
	var m *route.Manager
	sync := func() (ch route.Changes, err error) {
		t.Helper()
		if derr := h.Do(func() error {
			if m == nil {
				if m, err = route.New(nil); err != nil {
					return err
				}
			}
			ch, err = m.SyncRoutes(ctx, desired)
			return nil
		}); derr != nil {
			t.Fatal(derr)
		}
		return ch, err
	}
	ch, err := sync()
	if err != nil || len(ch.Pending) != 1 || len(ch.Added) != 0 {
		t.Fatalf("sync with rvdown down: %+v, %v; want one pending route and no error", ch, err)
	}
	if _, err := h.Exec(ctx, "ip", "link", "set", "rvdown", "up"); err != nil {
		t.Fatal(err)
	}
	ch, err = sync()
	if err != nil || len(ch.Pending) != 0 || len(ch.Added) != 1 {
		t.Fatalf("sync with rvdown up: %+v, %v; want the route added", ch, err)
	}
	if got := routes(t, h.Exec); !strings.HasPrefix(got, "10.1.0.7 dev rvdown scope link") {
		t.Errorf("routes with proto 190: %q", got)
	}
}

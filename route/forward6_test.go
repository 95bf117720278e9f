package route_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// IPv6 forwarding with real packets: the sysctls hoststate computes for an
// IPv6 endpoint (force_forwarding on its veth only) make h1 forward what
// the endpoint sends, while all.forwarding and every interface's
// host/router "forwarding" flag (which turns off router advertisements)
// stay off. What arrives on the uplink toward the endpoint is forwarded
// only once the administrator enables it there (here: the uplink's
// force_forwarding, which leaves RAs alone too). The root namespace is
// never written.
func TestIPv6ForwardingPerInterfaceInNamespace(t *testing.T) {
	simtest.Require(t)
	if _, err := os.Stat("/proc/sys/net/ipv6/conf/all/force_forwarding"); err != nil {
		stop := t.Skipf
		if os.Getenv("CI") == "true" {
			stop = t.Fatalf
		}
		stop("this kernel has no per-interface IPv6 force_forwarding (Linux 6.17): %v", err)
	}
	rootAll, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lab := simtest.New(t)
	h1, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.52.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := lab.AddHost(ctx, "h2", netip.MustParsePrefix("192.168.52.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	ep, err := lab.AddNamespace(ctx, "h1-ep6")
	if err != nil {
		t.Fatal(err)
	}
	const (
		epIP   = "fd00:1::5"
		h1Up   = "fd00:99::1"
		h2Up   = "fd00:99::2"
		veth   = "rv-ep6"
		gwLL   = "fe80::1"
		port   = 7777
		uplink = sim.HostIface
	)
	run := func(ns *sim.Namespace, cmds ...string) {
		t.Helper()
		for _, c := range cmds {
			if _, err := ns.Exec(ctx, strings.Fields(c)...); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(h1.Namespace, "ip link add "+veth+" type veth peer name eth0 netns "+ep.Name)
	run(ep,
		"ip link set lo up",
		"ip link set eth0 up",
		"ip -6 addr add "+epIP+"/128 dev eth0 nodad",
		"ip -6 route add default via "+gwLL+" dev eth0")
	run(h1.Namespace,
		"ip -6 addr add "+h1Up+"/64 dev "+uplink+" nodad",
		"ip -6 addr add "+gwLL+"/64 dev "+veth+" nodad",
		"ip link set "+veth+" up")
	run(h2.Namespace,
		"ip -6 addr add "+h2Up+"/64 dev "+uplink+" nodad",
		"ip -6 route add fd00:1::/64 via "+h1Up)

	// The agent's part: the endpoint route and the sysctl hoststate
	// computes for it (golden: hoststate/testdata/two-networks-h1.txt).
	dst := netip.MustParsePrefix(epIP + "/128")
	routes := []hoststate.Route{{Dst: dst, Dev: veth}}
	var m *route.Manager
	if err := h1.Do(func() (err error) { m, err = route.New(nil); return err }); err != nil {
		t.Fatal(err)
	}
	apply := func() {
		t.Helper()
		if err := h1.Do(func() error {
			if _, err := m.SyncRoutes(ctx, routes); err != nil {
				return err
			}
			_, err := m.SetSysctls(ctx, []hoststate.Sysctl{{Key: "net/ipv6/conf/" + veth + "/force_forwarding", Value: "1"}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	// delivered sends one UDP datagram from one namespace to another and
	// reports whether it arrived.
	delivered := func(from, to *sim.Namespace, toIP string) bool {
		t.Helper()
		var pc net.PacketConn
		if err := to.Do(func() (err error) { pc, err = net.ListenPacket("udp6", fmt.Sprintf("[%s]:%d", toIP, port)); return err }); err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		msg := fmt.Sprintf("romana %d", time.Now().UnixNano())
		if err := from.Do(func() error {
			c, err := net.Dial("udp6", fmt.Sprintf("[%s]:%d", toIP, port))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(msg))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return false
			}
			if string(buf[:n]) == msg {
				return true
			}
		}
	}
	sysctl := func(ns *sim.Namespace, key string) string {
		t.Helper()
		out, err := ns.Exec(ctx, "cat", "/proc/sys/"+key)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	h1ns, h2ns := h1.Namespace, h2.Namespace
	check := func(what string, egress, ingress bool) {
		t.Helper()
		if got := delivered(ep, h2ns, h2Up); got != egress {
			t.Errorf("%s: endpoint -> other host delivered = %v, want %v", what, got, egress)
		}
		if got := delivered(h2ns, ep, epIP); got != ingress {
			t.Errorf("%s: other host -> endpoint delivered = %v, want %v", what, got, ingress)
		}
		for _, key := range []string{"net/ipv6/conf/all/forwarding", "net/ipv6/conf/" + uplink + "/forwarding", "net/ipv6/conf/" + veth + "/forwarding"} {
			if v := sysctl(h1ns, key); v != "0" {
				t.Errorf("%s: %s = %s in h1, want 0 (a router: no more RAs)", what, key, v)
			}
		}
	}

	check("no forwarding", false, false)
	apply()
	if v := sysctl(h1ns, "net/ipv6/conf/"+veth+"/force_forwarding"); v != "1" {
		t.Fatalf("the veth's force_forwarding = %s after SetSysctls", v)
	}
	check("the veth forwards", true, false)
	run(h1ns, "sysctl -qw net.ipv6.conf."+uplink+".force_forwarding=1") // the administrator's choice
	check("the uplink forwards too", true, true)

	if now, _ := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); string(now) != string(rootAll) {
		t.Errorf("the root namespace's all.forwarding changed: %q -> %q", rootAll, now)
	}
}

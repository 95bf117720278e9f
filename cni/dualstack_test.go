package cni

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// addV6Networks gives the env's romanad an IPv6 network pods6 on a /48
// ULA and a second IPv4 network net2, with the same fields as net1; h1
// gets a slot in each.
func (e *env1) addV6Networks(t *testing.T) {
	t.Helper()
	fields := []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}
	for _, n := range []api.Network{{Name: "pods6", CIDR: "fd00:1234:5678::/48", Fields: fields}, {Name: "net2", CIDR: "172.16.0.0/12", Fields: fields}} {
		if _, err := e.rd.AddNetwork(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
}

// resultIPs returns a result's addresses by family, checking each one's
// prefix length and gateway and that there is one default route per
// family through that gateway.
func resultIPs(t *testing.T, res *current.Result) (v4, v6 netip.Addr) {
	t.Helper()
	for _, c := range res.IPs {
		ip, _ := netip.AddrFromSlice(c.Address.IP)
		ip = ip.Unmap()
		ones, bits := c.Address.Mask.Size()
		gw, _ := netip.AddrFromSlice(c.Gateway)
		if ones != ip.BitLen() || bits != ip.BitLen() || gw.Unmap() != GatewayFor(ip) {
			t.Fatalf("result address %v gateway %v", c.Address, c.Gateway)
		}
		dflt := "0.0.0.0/0"
		if ip.Is4() {
			v4 = ip
		} else {
			v6, dflt = ip, "::/0"
		}
		if !slices.ContainsFunc(res.Routes, func(r *types.Route) bool { return r.Dst.String() == dflt && r.GW.Equal(c.Gateway) }) {
			t.Fatalf("result routes %v: no %s via %v", res.Routes, dflt, c.Gateway)
		}
	}
	if len(res.Routes) != len(res.IPs) {
		t.Fatalf("result routes %v for %d addresses", res.Routes, len(res.IPs))
	}
	return v4, v6
}

func ping6(nsName, dst string) error { return ping(nsName, dst) }

// TestLibcniDualStack: one ADD with "networks" [net1, pods6] gives the
// container an IPv4 and an IPv6 address of the same tenant and segment on
// one veth, reachable both ways (the host answers neighbour discovery for
// fe80::1 on the veth); an IPv6-only network works alone; CHECK sees each
// part; two networks of one family are refused with nothing left behind;
// DEL and GC release both addresses.
func TestLibcniDualStack(t *testing.T) {
	e := newEnv(t)
	e.addV6Networks(t)
	ctx := context.Background()
	dual := confList(t, "1.1.0", e.sock, `,"networks":["net1","pods6"]`)
	only6 := confList(t, "1.1.0", e.sock, `,"networks":["pods6"]`)
	two4 := confList(t, "1.1.0", e.sock, `,"networks":["net1","net2"]`)
	c1, c1Path := e.container(t, "d1")
	c2, c2Path := e.container(t, "d2")
	rt1 := &libcni.RuntimeConf{ContainerID: "dual1", NetNS: c1Path, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"ROMANA_TENANT", "acme"}, {"ROMANA_SEGMENT", "web"}}}
	rt2 := &libcni.RuntimeConf{ContainerID: "v6only2", NetNS: c2Path, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"ROMANA_TENANT", "acme"}, {"ROMANA_SEGMENT", "web"}}}

	res1, err := e.add(t, e.cfg, dual, rt1)
	if err != nil {
		t.Fatalf("ADD dual1: %v", err)
	}
	ip4, ip6 := resultIPs(t, res1)
	if !ip4.IsValid() || !ip6.IsValid() {
		t.Fatalf("dual-stack ADD gave %v", res1.IPs)
	}
	res2, err := e.add(t, e.cfg, only6, rt2)
	if err != nil {
		t.Fatalf("ADD v6only2: %v", err)
	}
	if v4, v6 := resultIPs(t, res2); v4.IsValid() || !v6.IsValid() {
		t.Fatalf("IPv6-only ADD gave %v", res2.IPs)
	}
	peer6 := netip.MustParseAddr(strings.Split(res2.IPs[0].Address.String(), "/")[0])

	// romanad: two addresses, same tenant and segment, one veth; the
	// plan puts the same tenant and segment ids in both.
	veth := VethName("dual1:eth0")
	a4, err4 := e.rd.GetAddress(ctx, "dual1:eth0")
	a6, err6 := e.rd.GetAddress(ctx, "dual1:eth0:1")
	if err4 != nil || err6 != nil || a4.IP != ip4 || a6.IP != ip6 || a4.Network != "net1" || a6.Network != "pods6" ||
		a4.Tenant != a6.Tenant || a4.Segment != a6.Segment || a4.Interface != veth || a6.Interface != veth {
		t.Fatalf("romanad has %+v (%v) and %+v (%v)", a4, err4, a6, err6)
	}
	snap, err := e.rd.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var decoded []plan.Decoded
	for _, n := range snap.Networks {
		if n.Name != "net1" && n.Name != "pods6" {
			continue
		}
		p, err := plan.Parse(n.Spec())
		if err != nil {
			t.Fatal(err)
		}
		ip := map[string]netip.Addr{"net1": ip4, "pods6": ip6}[n.Name]
		d, err := p.Decode(ip)
		if err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, d)
	}
	if len(decoded) != 2 || decoded[0].Tenant != decoded[1].Tenant || decoded[0].Segment != decoded[1].Segment ||
		decoded[0].Loc.String() != decoded[1].Loc.String() || decoded[0].Tenant == 0 {
		t.Errorf("decoded fields differ between the families: %+v", decoded)
	}

	// Host side: both routes with proto 190, fe80::1 on the veth.
	if out := run(t, "ip", "-n", e.host, "-6", "route", "show", ip6.String()+"/128", "proto", "190", "dev", veth); !strings.Contains(out, ip6.String()) {
		t.Errorf("host route to %s missing: %q", ip6, out)
	}
	if out := run(t, "ip", "-n", e.host, "-6", "addr", "show", "dev", veth); !strings.Contains(out, "inet6 fe80::1/64 scope link") {
		t.Errorf("no fe80::1 on %s: %s", veth, out)
	}

	// Real packets: the gateway answers (neighbour discovery on the veth,
	// no forwarding involved); with the veths' force_forwarding (the
	// agent's, set here by hand) the host routes between the endpoints
	// over IPv6, and still over IPv4.
	if err := ping6(c1, "fe80::1%eth0"); err != nil {
		t.Error(err)
	}
	for _, v := range []string{veth, VethName("v6only2:eth0")} {
		run(t, "ip", "netns", "exec", e.host, "sysctl", "-qw", "net/ipv6/conf/"+v+"/force_forwarding=1")
	}
	if err := ping6(c1, peer6.String()); err != nil {
		t.Error(err)
	}
	if err := ping6(c2, ip6.String()); err != nil {
		t.Error(err)
	}
	if err := ping(c1, Gateway.String()); err != nil {
		t.Error(err)
	}

	// CHECK: passes; notices a missing v6 host route and a missing gateway address.
	if err := e.cfg.CheckNetworkList(ctx, dual, rt1); err != nil {
		t.Fatalf("CHECK dual1: %v", err)
	}
	run(t, "ip", "-n", e.host, "-6", "route", "del", ip6.String()+"/128", "dev", veth)
	cniError(t, e.cfg.CheckNetworkList(ctx, dual, rt1), types.ErrInternal, "host route "+ip6.String()+"/128 dev "+veth+" is missing")
	run(t, "ip", "-n", e.host, "-6", "route", "add", ip6.String()+"/128", "dev", veth, "proto", "190")
	run(t, "ip", "-n", e.host, "-6", "addr", "del", "fe80::1/64", "dev", veth)
	cniError(t, e.cfg.CheckNetworkList(ctx, dual, rt1), types.ErrInternal, "lacks the gateway address fe80::1/64")
	run(t, "ip", "-n", e.host, "-6", "addr", "add", "fe80::1/64", "dev", veth, "nodad")
	run(t, "ip", "-n", c1, "-6", "route", "del", "default")
	cniError(t, e.cfg.CheckNetworkList(ctx, dual, rt1), types.ErrInternal, "container route default via fe80::1 dev eth0 is missing")
	run(t, "ip", "-n", c1, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
	if err := e.cfg.CheckNetworkList(ctx, dual, rt1); err != nil {
		t.Fatalf("CHECK dual1 after repair: %v", err)
	}
	if err := e.cfg.CheckNetworkList(ctx, only6, rt2); err != nil {
		t.Fatalf("CHECK v6only2: %v", err)
	}

	// Two IPv4 networks: refused, nothing left.
	_, c3Path := e.container(t, "d3")
	rt3 := &libcni.RuntimeConf{ContainerID: "two4", NetNS: c3Path, IfName: "eth0", Args: [][2]string{{"ROMANA_TENANT", "acme"}}}
	_, err = e.cfg.AddNetworkList(ctx, two4, rt3)
	cniError(t, err, types.ErrInvalidNetworkConfig, "want at most one IPv4 and one IPv6 address")
	e.assertGone(t, "two4", "eth0", "")

	// DEL releases both addresses; GC (nothing valid) releases the IPv6-only one.
	if err := e.cfg.DelNetworkList(ctx, dual, rt1); err != nil {
		t.Fatalf("DEL dual1: %v", err)
	}
	e.assertGone(t, "dual1", "eth0", c1)
	if err := e.cfg.GCNetworkList(ctx, only6, &libcni.GCArgs{}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	e.assertGone(t, "v6only2", "eth0", c2)
}

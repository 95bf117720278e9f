package bgp

// A dual-stack leaf-spine with real BIRD routers: two racks, each a host
// behind its own top-of-rack, both top-of-racks under one spine. Each host
// runs the speaker with what package fabric decides for it (one session
// per family with its top-of-rack), and a dual-stack endpoint. Packets
// between the endpoints, over IPv6 and IPv4, prove the routes every router
// learned.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/bird"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/fabric"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// dsRack is one rack of the dual-stack test.
type dsRack struct {
	name, host, tor string
	rack            uint64 // the rack's id in both plans
	host4, host6    netip.Prefix
	tor4, tor6      netip.Prefix // the top-of-rack's host links
	up4, up6        netip.Prefix // its uplink; the spine's end is Prev()
	asn             uint32
}

var dsRacks = []dsRack{
	{name: "r1", host: "h1", tor: "tor1", rack: 0,
		host4: netip.MustParsePrefix("192.168.1.11/24"), host6: netip.MustParsePrefix("fd00:1::11/64"),
		tor4: netip.MustParsePrefix("192.168.1.1/24"), tor6: netip.MustParsePrefix("fd00:1::1/64"),
		up4: netip.MustParsePrefix("172.16.0.1/31"), up6: netip.MustParsePrefix("fd00:ff::1/127"), asn: 65101},
	{name: "r2", host: "h3", tor: "tor2", rack: 1,
		host4: netip.MustParsePrefix("192.168.2.13/24"), host6: netip.MustParsePrefix("fd00:2::13/64"),
		tor4: netip.MustParsePrefix("192.168.2.1/24"), tor6: netip.MustParsePrefix("fd00:2::1/64"),
		up4: netip.MustParsePrefix("172.16.0.3/31"), up6: netip.MustParsePrefix("fd00:ff::3/127"), asn: 65102},
}

// dsPlans are the two networks: pods and its IPv6 twin on a /48 ULA.
func dsPlans(t *testing.T) []api.Network {
	t.Helper()
	return []api.Network{
		{Name: "pods", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "rack", Bits: 4}, {Name: "host", Bits: 4},
			{Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}},
		{Name: "pods6", CIDR: "fd00:1234:5678::/48", Fields: []plan.Field{{Name: "rack", Bits: 4}, {Name: "host", Bits: 12},
			{Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}}},
	}
}

func mustPlan(t *testing.T, n api.Network) *plan.Plan {
	t.Helper()
	p, err := plan.Parse(n.Spec())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dsSnapshot is what romanad would hold: both networks, each rack's host
// with both underlay addresses and its slot, both top-of-racks.
func dsSnapshot(t *testing.T) api.Snapshot {
	snap := api.Snapshot{Networks: dsPlans(t)}
	for _, r := range dsRacks {
		h := api.Host{Name: r.host, IP: r.host4.Addr(), IP6: r.host6.Addr(), Labels: map[string]string{"rack": r.name}}
		for _, n := range snap.Networks {
			loc := plan.Loc{Groups: []uint64{r.rack}, Host: 0}
			c, err := mustPlan(t, n).HostCIDR(loc)
			if err != nil {
				t.Fatal(err)
			}
			h.Slots = append(h.Slots, api.HostSlot{Network: n.Name, Loc: loc, CIDR: c})
		}
		snap.Hosts = append(snap.Hosts, h)
		snap.Devices = append(snap.Devices, api.Device{Name: r.tor, Kind: api.DeviceToR, Group: map[string]string{"rack": r.name},
			ASN: r.asn, Links: []api.DeviceLink{{Local: r.tor4}, {Local: r.tor6},
				{Peer: "spine1", Local: r.up4, Remote: r.up4.Addr().Prev()}, {Peer: "spine1", Local: r.up6, Remote: r.up6.Addr().Prev()}}})
	}
	return snap
}

// endpointIP is the first endpoint address of tenant 0, segment 0 in
// rack r's host block of network n.
func endpointIP(t *testing.T, n api.Network, r dsRack) netip.Addr {
	t.Helper()
	p := mustPlan(t, n)
	first, _ := p.EndpointRange()
	ip, err := p.Address(plan.Loc{Groups: []uint64{r.rack}, Host: 0}, 0, 0, first+9)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

func nsSh(t *testing.T, ns *sim.Namespace, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := ns.Exec(context.Background(), strings.Fields(c)...); err != nil {
			t.Fatal(err)
		}
	}
}

const forwarding = "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"

// TestBIRDDualStackLeafSpine: hosts in two racks announce their IPv4 and
// IPv6 blocks over one session per family to BIRD top-of-racks, which pass
// the rack aggregates through a BIRD spine; each host installs the other
// rack's aggregates (IPv6 via its top-of-rack's IPv6 address). Endpoints
// reach each other across the racks over IPv6 (ping and TCP) and IPv4;
// once a host's speaker stops, its blocks are withdrawn and unreachable.
func TestBIRDDualStackLeafSpine(t *testing.T) {
	requireBird(t)
	simtest.Require(t, "ping", "sysctl")
	lab := simtest.New(t)
	ctx := context.Background()
	snap := dsSnapshot(t)
	nets := snap.Networks

	spineNS, err := lab.AddHost(ctx, "spine1", netip.MustParsePrefix("172.16.0.0/31"))
	if err != nil {
		t.Fatal(err)
	}
	nsSh(t, spineNS.Namespace, "ip addr add 172.16.0.2/31 dev eth0", "ip addr add fd00:ff::/127 dev eth0 nodad",
		"ip addr add fd00:ff::2/127 dev eth0 nodad", forwarding)
	spine := bird.Config{RouterID: netip.MustParseAddr("172.16.0.0"), ASN: 65100}

	type rackRun struct {
		dsRack
		host    *sim.Host
		tor     *bird.Router
		ep      *sim.Endpoint
		speaker *speakerProc
		blocks  []netip.Prefix // the host's block in pods, pods6
		aggr    []netip.Prefix // the rack's CIDR in pods, pods6
	}
	var runs []*rackRun
	for _, r := range dsRacks {
		rr := &rackRun{dsRack: r}
		for _, n := range nets {
			p := mustPlan(t, n)
			hc, err := p.HostCIDR(plan.Loc{Groups: []uint64{r.rack}})
			if err != nil {
				t.Fatal(err)
			}
			gc, err := p.GroupCIDR([]uint64{r.rack})
			if err != nil {
				t.Fatal(err)
			}
			rr.blocks, rr.aggr = append(rr.blocks, hc), append(rr.aggr, gc)
		}
		torNS, err := lab.AddHost(ctx, r.tor, r.tor4)
		if err != nil {
			t.Fatal(err)
		}
		nsSh(t, torNS.Namespace, "ip addr add "+r.tor6.String()+" dev eth0 nodad", "ip addr add "+r.up4.String()+" dev eth0",
			"ip addr add "+r.up6.String()+" dev eth0 nodad", forwarding)
		if rr.host, err = lab.AddHost(ctx, r.host, r.host4); err != nil {
			t.Fatal(err)
		}
		nsSh(t, rr.host.Namespace, "ip addr add "+r.host6.String()+" dev eth0 nodad", forwarding)

		// The top-of-rack: per family, a session with its host (the host's
		// block in, the other racks' aggregates out) and one with the spine
		// (rack-length prefixes in, its own aggregate out). Every router
		// sets itself as the next hop: in the lab all share one L2 segment,
		// where BIRD would otherwise pass on a next hop of another subnet.
		hostLen := []int{rr.blocks[0].Bits(), rr.blocks[1].Bits()}
		rackLen := []int{rr.aggr[0].Bits(), rr.aggr[1].Bits()}
		var nbs []bird.Neighbor
		for i, fam := range []struct{ suffix, aggr string }{{"", "romana_aggr"}, {"v6", "romana_aggr6"}} {
			pool := []netip.Prefix{netip.MustParsePrefix(nets[i].CIDR)}
			local, host, up := r.tor4.Addr(), r.host4.Addr(), r.up4
			if i == 1 {
				local, host, up = r.tor6.Addr(), r.host6.Addr(), r.up6
			}
			nbs = append(nbs,
				bird.Neighbor{Name: r.host + fam.suffix, Local: local, Addr: host, ASN: DefaultASN,
					Import: "where net ~ " + bird.PrefixSet(pool, hostLen[i]), Export: "where source = RTS_BGP", HoldTime: 9, ConnectRetry: 1,
					NextHopSelf: true},
				bird.Neighbor{Name: "spine1" + fam.suffix, Local: up.Addr(), Addr: up.Addr().Prev(), ASN: 65100,
					Import: "where net ~ " + bird.PrefixSet(pool, rackLen[i]), Export: fmt.Sprintf("where proto = %q", fam.aggr), HoldTime: 9, ConnectRetry: 1,
					NextHopSelf: true})
			spine.Neighbors = append(spine.Neighbors, bird.Neighbor{Name: r.tor + fam.suffix, Local: up.Addr().Prev(), Addr: up.Addr(), ASN: r.asn,
				Import: "where net ~ " + bird.PrefixSet(pool, rackLen[i]), Export: "where source = RTS_BGP", HoldTime: 9, ConnectRetry: 1,
				NextHopSelf: true}) // all routers share the lab's one L2 segment
		}
		rr.tor = startBird(t, torNS, bird.Config{RouterID: r.tor4.Addr(), ASN: r.asn, Aggregates: rr.aggr, Neighbors: nbs})

		// The endpoint, dual-stack; the host side as the agent would make it.
		ip4, ip6 := endpointIP(t, nets[0], r), endpointIP(t, nets[1], r)
		if rr.ep, err = lab.AddEndpoint(ctx, rr.host, "ep", ip4, ""); err != nil {
			t.Fatal(err)
		}
		if err := rr.ep.AddIP6(ctx, ip6); err != nil {
			t.Fatal(err)
		}
		veth := rr.ep.HostIface
		nsSh(t, rr.host.Namespace, "ip addr add "+sim.Gateway6.String()+"/64 dev "+veth+" nodad",
			"ip addr add "+hoststate.GatewayAddr.String()+"/32 dev "+veth,
			"ip route add "+ip4.String()+"/32 dev "+veth, "ip -6 route add "+ip6.String()+"/128 dev "+veth)
		runs = append(runs, rr)
	}
	startBird(t, spineNS, spine)

	for _, rr := range runs {
		d, err := fabric.ForHost(snap, rr.host.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Peers) != 2 || len(d.Problems) > 0 {
			t.Fatalf("%s: want one IPv4 and one IPv6 session with %s: %s", rr.host.Name, rr.dsRack.tor, d)
		}
		rr.speaker = startSpeaker(t, rr.host, helperConfig{Accept: true, Host: d})
	}
	for _, rr := range runs {
		other := runs[1-int(rr.rack)]
		for i, suffix := range []string{"", "v6"} {
			expect.Eventually(t, rr.dsRack.tor+" learns "+rr.dsRack.host+"'s block over session "+rr.dsRack.host+suffix, wait,
				learnedFrom(rr.tor, rr.dsRack.host+suffix, rr.blocks[i]))
		}
		// The host installs the other rack's aggregates, each via its
		// top-of-rack's address of the aggregate's family.
		expect.Eventually(t, rr.dsRack.host+" installs the other rack's aggregates", wait, func() error {
			out6 := ipRoute6(t, rr.host, "proto", "191")
			out4 := ipRoute(t, rr.host, "proto", "191")
			want6 := other.aggr[1].String() + " via " + rr.tor6.Addr().String()
			want4 := other.aggr[0].String() + " via " + rr.tor4.Addr().String()
			if !strings.Contains(out6, want6) || !strings.Contains(out4, want4) {
				return fmt.Errorf("proto 191: IPv6 %q (want %q), IPv4 %q (want %q)", out6, want6, out4, want4)
			}
			return nil
		})
	}

	// Real packets across the racks: ping over IPv6 and IPv4, and a TCP
	// exchange over IPv6, both ways.
	for _, rr := range runs {
		other := runs[1-int(rr.rack)]
		for _, dst := range []netip.Addr{other.ep.IP6, other.ep.IP} {
			if out, err := rr.ep.Exec(ctx, "ping", "-c", "1", "-W", "2", dst.String()); err != nil {
				t.Errorf("%s -> %s: ping: %v\n%s", rr.ep.IP6, dst, err, out)
			}
		}
		if err := tcpEcho(ctx, rr.ep, other.ep, other.ep.IP6); err != nil {
			t.Errorf("%s -> [%s]: tcp: %v", rr.ep.IP6, other.ep.IP6, err)
		}
	}

	// h1's speaker stops: tor1 and, through the spine, tor2 drop h1's
	// blocks; h1 removes its learned routes; h3's endpoint can no longer
	// reach h1's over IPv6 (tor1's blackhole aggregate drops it).
	h1, h3 := runs[0], runs[1]
	h1.speaker.signal(t, syscall.SIGTERM)
	h1.speaker.wait(t)
	for _, suffix := range []string{"", "v6"} {
		expect.Eventually(t, "withdrawn from tor1 at stop", wait, learnedFrom(h1.tor, "h1"+suffix))
	}
	if out := ipRoute6(t, h1.host, "proto", "191"); out != "" {
		t.Errorf("learned IPv6 routes left on h1: %q", out)
	}
	if out, err := h3.ep.Exec(ctx, "ping", "-c", "1", "-W", "1", h1.ep.IP6.String()); err == nil {
		t.Errorf("h3's endpoint still reaches h1's over IPv6 after h1 withdrew its block:\n%s", out)
	}
}

// startBird runs a BIRD router in ns with config c.
func startBird(t *testing.T, ns *sim.Host, c bird.Config) *bird.Router {
	t.Helper()
	r := bird.New(ns.Name, ns.Namespace.Name, t.TempDir())
	if err := r.Start(context.Background(), c.Render()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("bird %s log:\n%s", r.Name, r.Tail(30))
		}
	})
	return r
}

// learnedFrom checks the prefixes BIRD holds from BGP protocol proto.
func learnedFrom(r *bird.Router, proto string, want ...netip.Prefix) func() error {
	return func() error {
		got, err := r.Networks(context.Background(), "protocol", proto)
		if err != nil {
			return err
		}
		if len(got) == 0 && len(want) == 0 {
			return nil
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("bird %s has %v from %s, want %v", r.Name, got, proto, want)
		}
		return nil
	}
}

func ipRoute6(t *testing.T, ns *sim.Host, args ...string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), append([]string{"ip", "-6", "route", "show"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tcpEcho listens in to's namespace on ip and sends a line from from's
// namespace, which must come back.
func tcpEcho(ctx context.Context, from, to *sim.Endpoint, ip netip.Addr) error {
	ln, err := to.Listen("tcp", netip.AddrPortFrom(ip, 8080).String())
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	msg := "hello over " + ip.String() + "\n"
	return from.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, 8080).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	})
}

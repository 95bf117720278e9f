package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
)

// addHosts adds simulated hosts h1..hN on 192.168.<subnet>.0/24 to the lab
// and to snap, each with its block of plan p in network "net1".
func addHosts(b *testing.B, ctx context.Context, lab *sim.Lab, p *plan.Plan, n int, subnet byte, snap *api.Snapshot) map[string]*sim.Host {
	hosts := map[string]*sim.Host{}
	for i := uint64(1); i <= uint64(n); i++ {
		name := fmt.Sprintf("h%d", i)
		ip := netip.AddrFrom4([4]byte{192, 168, subnet, byte(i)})
		h, err := lab.AddHost(ctx, name, netip.PrefixFrom(ip, 24))
		if err != nil {
			b.Fatal(err)
		}
		hosts[name] = h
		c, _ := p.HostCIDR(plan.Loc{Host: i})
		snap.Hosts = append(snap.Hosts, api.Host{Name: name, IP: ip, Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: i}, CIDR: c}}})
	}
	return hosts
}

// programHost does the agent's route part of st in the current namespace
// (sysctls, gateway, routes) and returns a firewall adapter for it. Call it
// inside the host's Do.
func programHost(ctx context.Context, st hoststate.State) (*Firewall, error) {
	m, err := route.New(nil)
	if err != nil {
		return nil, err
	}
	if _, err := m.SetSysctls(ctx, st.Sysctls); err != nil {
		return nil, err
	}
	if err := m.EnsureGateway(ctx, st.Gateway); err != nil {
		return nil, err
	}
	if _, err := m.SyncRoutes(ctx, st.Routes); err != nil {
		return nil, err
	}
	return New(nil)
}

// iperfServer starts an iperf3 server on dst's address, stopped when the
// benchmark ends.
func iperfServer(b *testing.B, dst *sim.Endpoint) {
	srv := dst.Command(context.Background(), "iperf3", "-s", "-B", dst.IP.String())
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
}

// iperf runs a 3 s iperf3 client and returns Gbit/s received.
func iperf(b *testing.B, ctx context.Context, from, to *sim.Endpoint) float64 {
	return iperfStreams(b, ctx, from, to, 1)
}

// iperfStreams runs a 3 s iperf3 client with the given number of parallel
// streams and returns Gbit/s received (all streams together).
func iperfStreams(b *testing.B, ctx context.Context, from, to *sim.Endpoint, streams int) float64 {
	var out []byte
	err := expect.Poll(5*time.Second, func() (err error) { // the server may not listen yet
		out, err = from.Command(ctx, "iperf3", "-c", to.IP.String(), "-t", "3", "-P", strconv.Itoa(streams), "-J").Output()
		return err
	})
	if err != nil {
		b.Fatalf("iperf3 -P %d: %v\n%s", streams, err, out)
	}
	return iperfGbits(b, out)
}

// iperfGbits reads the received Gbit/s from iperf3's JSON report (-J).
func iperfGbits(b *testing.B, out []byte) float64 {
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

// t42Hosts adds snap's hosts to the lab, each with one endpoint "e<host>"
// of tenant t42 (segment s0, interface "rv-e<host>") that it also records
// in snap: the throughput benchmarks' two ends.
func t42Hosts(b *testing.B, ctx context.Context, lab *sim.Lab, p *plan.Plan, snap *api.Snapshot) (map[string]*sim.Host, map[string]*sim.Endpoint) {
	hosts := map[string]*sim.Host{}
	eps := map[string]*sim.Endpoint{}
	for i, h := range snap.Hosts {
		var err error
		if hosts[h.Name], err = lab.AddHost(ctx, h.Name, netip.PrefixFrom(h.IP, 24)); err != nil {
			b.Fatal(err)
		}
		ip, _ := p.Address(plan.Loc{Host: uint64(i + 1)}, 42, 0, 1) // t42: tenant mode
		name := "e" + h.Name
		if eps[h.Name], err = lab.AddEndpoint(ctx, hosts[h.Name], name, ip, "rv-"+name); err != nil {
			b.Fatal(err)
		}
		snap.Addresses = append(snap.Addresses, api.Address{Name: name, IP: ip, Network: "net1", Host: h.Name, Tenant: "t42", Segment: "s0", Interface: "rv-" + name})
	}
	return hosts, eps
}

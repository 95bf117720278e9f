package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// BenchmarkIPv6VsIPv4 measures iperf3 TCP throughput between dual-stack
// endpoints on two simulated hosts, over IPv4 and over IPv6 in the same
// run (A-B-B-A), through Romana's dual-stack ruleset (100 tenants in an
// IPv4 and an IPv6 network with the same fields, the endpoints in one
// tenant) and routes (v6 blocks via the hosts' IPv6 underlay addresses,
// IPv6 forwarding per interface), and without the table (the no-rule
// routed path of each family), alternated A-B-C-D-D-C-B-A per iteration.
// It reports the four rates (medians of 2 runs of 3 s per condition per
// iteration) and their ratios.
func BenchmarkIPv6VsIPv4(b *testing.B) {
	simtest.Require(b, "nft", "iperf3")
	ctx := context.Background()
	lab := simtest.New(b)
	fields := []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 4}}
	nets := []api.Network{{Name: "net1", CIDR: "10.0.0.0/8", Fields: fields}, {Name: "net6", CIDR: "fd00:1234:5678::/48", Fields: fields}}
	plans := map[string]*plan.Plan{}
	for _, n := range nets {
		p, err := plan.Parse(n.Spec())
		if err != nil {
			b.Fatal(err)
		}
		plans[n.Name] = p
	}
	snap := api.Snapshot{Networks: nets}
	hosts := addHosts(b, ctx, lab, plans["net1"], 2, 91, &snap)
	for i := range snap.Hosts {
		h := snap.Hosts[i].Name
		ip6 := netip.MustParseAddr(fmt.Sprintf("fd91::%d", i+1))
		if err := hosts[h].AddAddr(netip.PrefixFrom(ip6, 64)); err != nil {
			b.Fatal(err)
		}
		if err := hosts[h].ForwardIPv6Uplink(ctx); err != nil {
			b.Fatal(err)
		}
		snap.Hosts[i].IP6 = ip6
		c, _ := plans["net6"].HostCIDR(plan.Loc{Host: uint64(i + 1)})
		snap.Hosts[i].Slots = append(snap.Hosts[i].Slots, api.HostSlot{Network: "net6", Loc: plan.Loc{Host: uint64(i + 1)}, CIDR: c})
	}
	for t := uint64(0); t < 100; t++ {
		iso := []string{api.IsolationTenant, api.IsolationSegment, api.IsolationNone}[t%3]
		name := fmt.Sprintf("t%d", t)
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: name, ID: t, Isolation: iso})
		snap.Segments = append(snap.Segments, api.Segment{Tenant: name, Name: "s0", ID: 0}, api.Segment{Tenant: name, Name: "s1", ID: 1})
	}
	eps := map[string]*sim.Endpoint{}
	for i, h := range []string{"h1", "h2"} {
		name := "e" + h
		var ips []netip.Addr
		for _, n := range nets {
			ip, _ := plans[n.Name].Address(plan.Loc{Host: uint64(i + 1)}, 42, 0, 1) // tenant t42: tenant mode
			ips = append(ips, ip)
			snap.Addresses = append(snap.Addresses, api.Address{Name: name + "-" + n.Name, IP: ip, Network: n.Name, Host: h, Tenant: "t42", Segment: "s0", Interface: "rv-" + name})
		}
		var err error
		if eps[h], err = lab.AddEndpointIPs(ctx, hosts[h], name, ips, "rv-"+name); err != nil {
			b.Fatal(err)
		}
	}
	fws, rulesets := map[string]*Firewall{}, map[string]hoststate.Ruleset{}
	for h, host := range hosts {
		st, err := hoststate.Compute(snap, h, hoststate.Options{})
		if err != nil || len(st.Problems) > 0 {
			b.Fatal(err, st.Problems)
		}
		rulesets[h] = st.Firewall
		if err := host.Do(func() error {
			fw, err := programHost(ctx, st)
			if err != nil {
				return err
			}
			fws[h] = fw
			_, err = fw.Apply(ctx, st.Firewall)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	src, dst := eps["h1"], eps["h2"]
	for i, ip := range dst.IPs() {
		srv := dst.Command(context.Background(), "iperf3", "-s", "-B", ip.String(), "-p", strconv.Itoa(5201+i))
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	}
	run := func(is4 bool) float64 {
		port := "5201"
		if !is4 {
			port = "5202"
		}
		var out []byte
		err := expect.Poll(5*time.Second, func() (err error) { // the server may not listen yet
			out, err = src.Command(ctx, "iperf3", "-c", dst.IPOf(is4).String(), "-p", port, "-t", "3", "-J").Output()
			return err
		})
		if err != nil {
			b.Fatalf("iperf3 to %s: %v\n%s", dst.IPOf(is4), err, out)
		}
		return iperfGbits(b, out)
	}
	// setTable installs Romana's table on both hosts, or removes it (the
	// routes stay): the no-rule routed path of each family.
	setTable := func(on bool) {
		for h, host := range hosts {
			if err := host.Do(func() error {
				if on {
					_, err := fws[h].Apply(ctx, rulesets[h])
					return err
				}
				return fws[h].Cleanup(ctx)
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	type cond struct {
		is4, table bool
	}
	res := map[cond][]float64{}
	order := []cond{{true, true}, {false, true}, {true, false}, {false, false}, {false, false}, {true, false}, {false, true}, {true, true}}
	for b.Loop() {
		for _, c := range order {
			setTable(c.table)
			res[c] = append(res[c], run(c.is4))
		}
	}
	v4, v6 := res[cond{true, true}], res[cond{false, true}]
	n4, n6 := res[cond{true, false}], res[cond{false, false}]
	b.Logf("Gbit/s with Romana's table: IPv4 %.2f, IPv6 %.2f; without: IPv4 %.2f, IPv6 %.2f", v4, v6, n4, n6)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(v4), "Gbit/s-v4")
	b.ReportMetric(median(v6), "Gbit/s-v6")
	b.ReportMetric(median(n4), "Gbit/s-v4-notable")
	b.ReportMetric(median(n6), "Gbit/s-v6-notable")
	b.ReportMetric(median(v6)/median(v4), "ratio")
	b.ReportMetric(median(n6)/median(n4), "ratio-notable")
	b.ReportMetric(median(v4)/median(n4), "v4-table-ratio")
	b.ReportMetric(median(v6)/median(n6), "v6-table-ratio")
}

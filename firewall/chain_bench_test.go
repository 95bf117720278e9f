package firewall

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// BenchmarkChainThroughput measures iperf3 TCP throughput from an endpoint
// on one simulated host to an endpoint on another through a one-hop service
// chain (a forwarding namespace on the source's host), and the same path
// without the chain, alternating A-B-B-A within one run (each iperf3 run is
// a new connection, so the chain decision is taken afresh). It reports both
// rates and their ratio (medians; 3 s per run).
func BenchmarkChainThroughput(b *testing.B) {
	simtest.Require(b, "nft", "iperf3")
	ctx := context.Background()
	lab := simtest.New(b)
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		b.Fatal(err)
	}
	snap := api.Snapshot{Networks: []api.Network{n},
		Tenants:  []api.Tenant{{Name: "acme", ID: 1, Isolation: api.IsolationTenant}, {Name: "infra", ID: 2, Isolation: api.IsolationNone}},
		Segments: []api.Segment{{Tenant: "acme", Name: "web", ID: 0}, {Tenant: "infra", Name: "fw", ID: 0}}}
	hosts := addHosts(b, ctx, lab, p, 2, 91, &snap)
	eps := map[string]*sim.Endpoint{}
	add := func(name, host string, hostID, tenant uint64, tn, seg string) {
		ip, _ := p.Address(plan.Loc{Host: hostID}, tenant, 0, 1)
		if eps[name], err = lab.AddEndpoint(ctx, hosts[host], name, ip, "rv-"+name); err != nil {
			b.Fatal(err)
		}
		snap.Addresses = append(snap.Addresses, api.Address{Name: name, IP: ip, Network: "net1", Host: host, Tenant: tn, Segment: seg, Interface: "rv-" + name})
	}
	add("src", "h1", 1, 1, "acme", "web")
	add("dst", "h2", 2, 1, "acme", "web")
	add("fw", "h1", 1, 2, "infra", "fw")
	sf := eps["fw"]
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"} {
		if _, err := sf.Exec(ctx, "sysctl", "-qw", kv); err != nil {
			b.Fatal(err)
		}
	}
	script := filepath.Join(b.TempDir(), "sf.nft")
	os.WriteFile(script, []byte("table inet sf {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tcounter\n\t}\n}\n"), 0o644)
	if _, err := sf.Exec(ctx, "nft", "-f", script); err != nil {
		b.Fatal(err)
	}
	chained := snap
	chained.Chains = []api.Chain{{Name: "bench", ID: 1, Tenant: "acme", Segment: "web", Via: []netip.Addr{sf.IP}, Failure: api.FailOpen}}

	// apply sets one host to the state of s (its ruleset, routes and steering).
	apply := func(s api.Snapshot) {
		for h, host := range hosts {
			st, err := hoststate.Compute(s, h, hoststate.Options{})
			if err != nil || len(st.Problems) > 0 {
				b.Fatal(err, st.Problems)
			}
			steer, err := hoststate.ComputeSteering(s, h, nil)
			if err != nil || len(steer.Problems) > 0 {
				b.Fatal(err, steer.Problems)
			}
			if err := host.Do(func() error {
				fw, err := programHost(ctx, st)
				if err != nil {
					return err
				}
				if _, err := fw.Apply(ctx, st.Firewall); err != nil {
					return err
				}
				pr, err := route.NewPolicy(nil)
				if err != nil {
					return err
				}
				if err := pr.Sync(ctx, steer.IPRules, steer.Routes); err != nil {
					return err
				}
				sfw, err := NewSteer(nil)
				if err != nil {
					return err
				}
				_, err = sfw.Apply(ctx, steer)
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	counterRE := regexp.MustCompile(`counter packets (\d+)`)
	forwarded := func() int {
		out, err := sf.Exec(ctx, "nft", "list", "chain", "inet", "sf", "forward")
		if err != nil {
			b.Fatal(err)
		}
		m := counterRE.FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("no counter:\n%s", out)
		}
		v, _ := strconv.Atoi(m[1])
		return v
	}

	dst := eps["dst"]
	iperfServer(b, dst)
	run := func() float64 { return iperf(b, ctx, eps["src"], dst) }

	var with, without []float64
	for b.Loop() {
		for _, on := range []bool{true, false, false, true} {
			s := snap
			if on {
				s = chained
			}
			apply(s)
			before := forwarded()
			g := run()
			// The path must be the one measured: the function forwards
			// (at least) the data segments of a chained run, nothing otherwise.
			if d := forwarded() - before; on && d < 1000 || !on && d != 0 {
				b.Fatalf("chain on=%v: the service function forwarded %d packets", on, d)
			}
			if on {
				with = append(with, g)
			} else {
				without = append(without, g)
			}
		}
	}
	b.Logf("Gbit/s through a one-hop chain %.2f, direct %.2f", with, without)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(with), "Gbit/s-chain")
	b.ReportMetric(median(without), "Gbit/s-direct")
	b.ReportMetric(median(with)/median(without), "ratio")
}

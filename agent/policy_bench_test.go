package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/route"
	"github.com/romana/romana/server/servertest"
)

// markFirewall is a knftables-fake firewall that reports when it has
// applied a ruleset containing the text it waits for.
type markFirewall struct {
	*firewall.Firewall
	host string
	mu   sync.Mutex
	want string
	seen chan<- string
}

func (f *markFirewall) expect(s string) {
	f.mu.Lock()
	f.want = s
	f.mu.Unlock()
}

func (f *markFirewall) Apply(ctx context.Context, rs hoststate.Ruleset) (bool, error) {
	changed, err := f.Firewall.Apply(ctx, rs)
	if err != nil {
		return changed, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.want != "" && strings.Contains(rs.String(), f.want) {
		f.want = ""
		f.seen <- f.host
	}
	return changed, nil
}

// BenchmarkPolicyEnforcement measures the time from a policy update at a
// real romanad (PUT /v1/policies/{name}, embedded etcd, unix socket) to its
// application on each of 12 in-process agents (their own clients, watch
// streams and reconcile loops; knftables' fake in place of nft, so the
// kernel's own transaction time is not included: see the firewall
// benchmarks for that). 100 other policies and 100 tenants are loaded.
// Resync is an hour: only watch events trigger the work.
func BenchmarkPolicyEnforcement(b *testing.B) {
	const agents = 12
	srv := servertest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := srv.Client
	if _, err := c.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 6}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 2}}}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := c.AddTenant(ctx, api.Tenant{Name: fmt.Sprintf("t%d", i)}); err != nil {
			b.Fatal(err)
		}
		if _, err := c.AddSegment(ctx, api.Segment{Tenant: fmt.Sprintf("t%d", i), Name: "s0"}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		p := api.Policy{Name: fmt.Sprintf("p%03d", i), Priority: 1 + i, Direction: []string{"ingress", "egress"},
			AppliedTo: []api.Selector{{Tenant: fmt.Sprintf("t%d", i)}},
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{CIDR: "172.16.0.0/12"}}, Protocol: "tcp", Ports: []uint16{22}},
				{Peers: []api.Peer{{Tenant: fmt.Sprintf("t%d", (i+1)%100)}}, Protocol: "tcp", PortRanges: []string{"8000-8080"}}}}
		if _, err := c.PutPolicy(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	seen := make(chan string, agents)
	var fws []*markFirewall
	var wg sync.WaitGroup
	for i := 0; i < agents; i++ {
		name := fmt.Sprintf("h%d", i)
		if _, err := c.AddHost(ctx, api.Host{Name: name, IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i + 1)})}); err != nil {
			b.Fatal(err)
		}
		cl := srv.ClientAs(b, pki.Host(name)) // each agent as its own host, over TLS
		routes, _ := route.NewFake(nil)
		fw, _ := firewall.NewFake(nil)
		mf := &markFirewall{Firewall: fw, host: name, seen: seen}
		fws = append(fws, mf)
		wg.Go(func() {
			Run(ctx, Config{Underlay: newFakeUnderlay(), Host: name, Resync: time.Hour, Source: cl, Routes: routes, Firewall: mf})
		})
	}
	defer wg.Wait()
	defer cancel()
	var lat []time.Duration
	i := 0
	apply := func() time.Duration {
		i++
		port := uint16(10000 + i)
		mark := fmt.Sprintf("tcp dport %d ", port)
		for _, f := range fws {
			f.expect(mark)
		}
		start := time.Now()
		if _, err := c.PutPolicy(ctx, api.Policy{Name: "mark", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "t1"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "t2"}}, Protocol: "tcp", Ports: []uint16{port}}}}); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(30 * time.Second)
		var last time.Duration
		for range agents {
			select {
			case <-seen:
				last = time.Since(start)
				lat = append(lat, last)
			case <-timeout:
				b.Fatal("agents did not apply the policy within 30s")
			}
		}
		return last
	}
	apply() // warm up: every agent has its snapshot and watch
	lat = nil
	for b.Loop() {
		apply()
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(lat)), "samples")
}

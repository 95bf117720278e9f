package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/route"
)

// fakeSteer is a stateful steering dataplane: the last applied table,
// rules and routes.
type fakeSteer struct {
	mu      sync.Mutex
	applied bool
	st      hoststate.Steering
	rules   []hoststate.IPRule
	routes  []hoststate.TableRoute
}

func (f *fakeSteer) Apply(_ context.Context, st hoststate.Steering) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied, f.st = true, st
	return true, nil
}

func (f *fakeSteer) Sync(_ context.Context, rules []hoststate.IPRule, routes []hoststate.TableRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules, f.routes = rules, routes
	return nil
}

func (f *fakeSteer) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st, f.rules, f.routes = hoststate.Steering{}, nil, nil
	return nil
}

// state renders the fake's routes and whether rules are in place.
func (f *fakeSteer) state() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, r := range f.routes {
		b.WriteString(r.String() + "\n")
	}
	if len(f.st.Rules) > 0 {
		b.WriteString("marking\n")
	}
	return b.String()
}

// fakeProber answers probes from a health table (default healthy).
type fakeProber struct {
	mu   sync.Mutex
	down map[netip.Addr]bool
}

func (p *fakeProber) Probe(_ context.Context, ip netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down[ip] {
		return api.Errorf(api.ReasonUnavailable, "no echo reply from %s", ip)
	}
	return nil
}

func (p *fakeProber) set(ip netip.Addr, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down[ip] = down
}

// chainWorld: world plus a source endpoint of acme/default and a service
// function (beta/web) on h1.
func chainWorld(t *testing.T) (*world, netip.Addr) {
	w := newWorld()
	w.snap.Addresses = append(w.snap.Addresses, w.address("src", 1, "acme", 1, 1, "rv-src"))
	ip, err := w.plan.Address(plan.Loc{Host: 1}, 2, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	w.snap.Addresses = append(w.snap.Addresses, api.Address{Name: "fw", IP: ip, Network: "net1", Host: "h1", Tenant: "beta", Segment: "web", Interface: "rv-fw"})
	return w, ip
}

func startSteering(t *testing.T, src *fakeSource, fake *fakeSteer, prober Prober) {
	s, err := NewSteerer(SteerConfig{Host: "h1", Firewall: fake, Routes: fake, Prober: prober,
		ProbeInterval: 20 * time.Millisecond, FailAfter: 2})
	if err != nil {
		t.Fatal(err)
	}
	routes, _ := route.NewFake(nil)
	fw, _ := firewall.NewFake(nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: time.Hour, Source: src, Routes: routes, Firewall: fw,
			Steering: s, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestSteeringFollowsChains(t *testing.T) {
	w, fw := chainWorld(t)
	src := newFakeSource(w.snap)
	src.failNext(2) // failed snapshots are retried
	fake := &fakeSteer{}
	startSteering(t, src, fake, nil)
	expect.Eventually(t, "first snapshot applied", within, func() error {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		if !fake.applied {
			return errors.New("steering not applied yet")
		}
		return nil
	})
	if got := fake.state(); got != "" {
		t.Fatalf("no chains: steering state %q", got)
	}
	src.put(api.KindChain, "c1", api.Chain{Name: "c1", ID: 1, Tenant: "acme", Segment: "default", Via: []netip.Addr{fw}, Failure: api.FailOpen})
	want := "table 20017 default via " + fw.String() + " dev rv-fw onlink\nmarking\n"
	expect.Eventually(t, "chain c1 steered", within, steeringIs(fake, want))
	src.del(api.KindChain, "c1")
	expect.Eventually(t, "chain c1 removed", within, steeringIs(fake, ""))
}

func TestSteeringHealth(t *testing.T) {
	w, fw := chainWorld(t)
	w.snap.Chains = []api.Chain{
		{Name: "closed", ID: 1, Tenant: "acme", Segment: "default", ToCIDR: netip.MustParsePrefix("10.2.0.0/16"), Via: []netip.Addr{fw}, Failure: api.FailClosed},
		{Name: "open", ID: 2, Tenant: "acme", Segment: "default", ToCIDR: netip.MustParsePrefix("10.3.0.0/16"), Via: []netip.Addr{fw}, Failure: api.FailOpen},
	}
	src := newFakeSource(w.snap)
	fake := &fakeSteer{}
	prober := &fakeProber{down: map[netip.Addr]bool{}}
	startSteering(t, src, fake, prober)
	up := "table 20017 default via " + fw.String() + " dev rv-fw onlink\ntable 20033 default via " + fw.String() + " dev rv-fw onlink\nmarking\n"
	expect.Eventually(t, "both chains steered", within, steeringIs(fake, up))
	prober.set(fw, true)
	// fail-closed: blackhole; fail-open: empty table (normal routing).
	down := "table 20017 blackhole default\nmarking\n"
	expect.Eventually(t, "function down", within, steeringIs(fake, down))
	prober.set(fw, false)
	expect.Eventually(t, "function back", within, steeringIs(fake, up))
}

// steeringIs is a condition: fake's steering state is want.
func steeringIs(fake *fakeSteer, want string) func() error {
	return func() error {
		if got := fake.state(); got != want {
			return fmt.Errorf("steering state %q", got)
		}
		return nil
	}
}

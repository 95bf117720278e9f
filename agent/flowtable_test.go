package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/hoststate"
)

// flowtableFirewall keeps the last ruleset applied; support is what its
// FlowtableSupport answers.
type flowtableFirewall struct {
	Firewall
	support error
	mu      sync.Mutex
	last    hoststate.Ruleset
	applied bool
}

func (f *flowtableFirewall) Apply(ctx context.Context, rs hoststate.Ruleset) (bool, error) {
	changed, err := f.Firewall.Apply(ctx, rs)
	if err == nil {
		f.mu.Lock()
		f.last, f.applied = rs, true
		f.mu.Unlock()
	}
	return changed, err
}

func (f *flowtableFirewall) FlowtableSupport(context.Context) error { return f.support }

// lastDevices returns the devices of the last ruleset's flowtable, and
// whether it had one.
func (f *flowtableFirewall) lastDevices() ([]string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.applied {
		return nil, false, errors.New("nothing applied yet")
	}
	if len(f.last.Flowtables) == 0 {
		return nil, false, nil
	}
	return f.last.Flowtables[0].Devices, true, nil
}

func (r *rig) runFlowtable(fw Firewall, u *fakeUnderlay) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Underlay: u, Host: "h1", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: fw,
			Metrics: r.metrics, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, Flowtable: true})
	}()
	r.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("Run: %v", err)
		}
	})
}

func (u *fakeUnderlay) addVeth(name string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.u.Links = append(u.u.Links, hoststate.Link{Name: name, Kind: "veth"})
}

// With --flowtable the flowtable lists the uplink and the endpoints' veths,
// and follows endpoints as they come (an endpoint change now runs the
// firewall manager); a veth that appears after its address is added once
// it exists, without waiting for the resync.
func TestFlowtableFollowsEndpoints(t *testing.T) {
	w := newWorld()
	w.snap.Addresses = []api.Address{w.address("a1", 1, "acme", 1, 1, "romana1")}
	r := newRig(t, w.snap)
	u := newFakeUnderlay()
	u.addVeth("romana1")
	fw := &flowtableFirewall{Firewall: r.fw}
	r.runFlowtable(fw, u)
	devices := func(want ...string) func() error {
		return func() error {
			got, ok, err := fw.lastDevices()
			if err != nil {
				return err
			}
			if !ok || !slices.Equal(got, want) {
				return fmt.Errorf("flowtable %v devices %v, want %v", ok, got, want)
			}
			return nil
		}
	}
	expect.Eventually(t, "initial", within, devices("eth0", "romana1"))
	r.kernel.AddLink("romana5", "veth")
	u.addVeth("romana5")
	r.src.put(api.KindAddress, "a5", w.address("a5", 1, "acme", 1, 5, "romana5"))
	expect.Eventually(t, "new endpoint", within, devices("eth0", "romana1", "romana5"))
	// The address first, its veth later (as a CNI ADD may do).
	r.src.put(api.KindAddress, "a6", w.address("a6", 1, "acme", 1, 6, "romana6"))
	// The route manager runs after the firewall manager in a pass: once
	// a6's route waits for its veth, the firewall has seen a6 too.
	expect.Eventually(t, "address without its veth yet", within, func() error {
		if p := metric(t, r.reg, "romana_agent_routes_pending"); p != 1 {
			return fmt.Errorf("routes pending %v, want 1", p)
		}
		return devices("eth0", "romana1", "romana5")()
	})
	r.kernel.AddLink("romana6", "veth")
	u.addVeth("romana6")
	expect.Eventually(t, "veth appeared", within, devices("eth0", "romana1", "romana5", "romana6"))
}

// On a kernel without flowtables, --flowtable still applies isolation and
// policies (the ruleset without the flowtable) and reports a problem.
func TestFlowtableUnsupportedRunsWithout(t *testing.T) {
	w := newWorld()
	w.snap.Addresses = []api.Address{w.address("a1", 1, "acme", 1, 1, "romana1")}
	r := newRig(t, w.snap)
	u := newFakeUnderlay()
	u.addVeth("romana1")
	fw := &flowtableFirewall{Firewall: r.fw, support: errors.New("no flowtables in this kernel")}
	r.runFlowtable(fw, u)
	expect.Eventually(t, "applied without the flowtable", within, func() error {
		_, ok, err := fw.lastDevices()
		if err != nil {
			return err
		}
		if ok {
			return errors.New("the ruleset has a flowtable")
		}
		if p := metric(t, r.reg, "romana_agent_problems"); p != 1 {
			return fmt.Errorf("problems %v, want 1", p)
		}
		return r.converged()
	})
}

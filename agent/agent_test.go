package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/knftables"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
)

// rig runs an agent for h1 on fakes.
type rig struct {
	t       *testing.T
	src     *fakeSource
	kernel  *route.Fake
	routes  *route.Manager
	nft     *knftables.Fake
	fw      *firewall.Firewall
	metrics *Metrics
	reg     *prometheus.Registry
}

func newRig(t *testing.T, snap api.Snapshot) *rig {
	r := &rig{t: t, src: newFakeSource(snap), reg: prometheus.NewRegistry()}
	r.routes, r.kernel = route.NewFake(nil)
	r.fw, r.nft = firewall.NewFake(nil)
	r.metrics = NewMetrics(r.reg)
	for _, a := range snap.Addresses {
		if a.Host == "h1" && a.Interface != "" {
			r.kernel.AddLink(a.Interface, "veth")
		}
	}
	return r
}

// run starts the agent; it stops when the test ends.
func (r *rig) run(resync time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: resync, Source: r.src, Routes: r.routes, Firewall: r.fw,
			Metrics: r.metrics, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	}()
	r.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("Run: %v", err)
		}
	})
}

// desired is what the agent should converge to for the source's state.
func (r *rig) desired() hoststate.State {
	r.src.mu.Lock()
	snap := r.src.state.Snapshot()
	r.src.mu.Unlock()
	u, _ := newFakeUnderlay().Read(context.Background())
	st, err := hoststate.Compute(snap, "h1", hoststate.Options{Underlay: &u})
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// converged returns nil when the fakes hold the desired state (endpoint
// routes whose veth is missing excepted), and if not, why.
func (r *rig) converged() error {
	st := r.desired()
	var want, got []hoststate.Route
	for _, rt := range st.Routes {
		if _, ok := r.kernel.Link(rt.Dev); rt.Dev == "" || ok {
			want = append(want, rt)
		}
	}
	for _, fr := range r.kernel.Routes() {
		if fr.Protocol == route.Protocol {
			got = append(got, fr.Route)
		}
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("routes %v, want %v", got, want)
	}
	if d := r.nft.Dump(); !strings.Contains(d, firewall.Stamp(st.Firewall)) {
		return errors.New("nft table is not the desired one:\n" + d)
	}
	if l, ok := r.kernel.Link(hoststate.GatewayLink); !ok || !l.Up {
		return errors.New("no gateway link")
	}
	if r.kernel.Sysctl("net.ipv4.ip_forward") != "1" {
		return errors.New("ip_forward is off")
	}
	return nil
}

// within is how long the tests wait for the agent to reach a state
// (expect.Eventually).
const within = 10 * time.Second

func TestNothingAppliedBeforeFirstSnapshot(t *testing.T) {
	w := newWorld()
	w.snap.Addresses = []api.Address{w.address("a1", 1, "acme", 1, 1, "romana1")}
	r := newRig(t, w.snap)
	// Every snapshot fails until the assertions below are done: a sixth
	// that succeeded while they ran would make them race the agent.
	r.src.failNext(math.MaxInt)
	r.run(time.Millisecond) // resyncs tick all the time meanwhile
	expect.Eventually(t, "five failed snapshots", within, func() error {
		if n := r.src.snapshotCalls(); n < 5 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	if d := r.nft.Dump(); d != "" {
		t.Fatalf("nft table written before the first snapshot:\n%s", d)
	}
	if rs := r.kernel.Routes(); len(rs) != 0 {
		t.Fatalf("routes written before the first snapshot: %v", rs)
	}
	if _, ok := r.kernel.Link(hoststate.GatewayLink); ok {
		t.Fatal("gateway link created before the first snapshot")
	}
	if err := r.metrics.Health(); err == nil {
		t.Fatal("healthy before the first snapshot")
	}
	r.src.failNext(0)
	expect.Eventually(t, "converged after the snapshot", within, r.converged)
	expect.Eventually(t, "healthy", within, r.metrics.Health)
}

func TestFollowsEvents(t *testing.T) {
	w := newWorld()
	w.snap.Addresses = []api.Address{w.address("a1", 1, "acme", 1, 1, "romana1"), w.address("a2", 2, "acme", 1, 1, "romana2")}
	r := newRig(t, w.snap)
	r.run(time.Hour) // no resync: only events drive it
	expect.Eventually(t, "initial", within, r.converged)

	// A new endpoint on h1.
	r.kernel.AddLink("romana3", "veth")
	a3 := w.address("a3", 1, "beta", 2, 5, "romana3")
	r.src.put(api.KindAddress, "a3", a3)
	expect.Eventually(t, "endpoint added", within, r.converged)
	if !hasRoute(r, a3.IP.String()+"/32") {
		t.Fatal("no route to a3")
	}
	// A new host: one more route.
	r.src.put(api.KindHost, "h3", w.host("h3", 3))
	expect.Eventually(t, "host added", within, r.converged)
	if !hasRoute(r, "10.3.0.0/16") {
		t.Fatal("no route to h3")
	}
	// A tenant in none mode: the ruleset changes.
	r.src.put(api.KindTenant, "open", api.Tenant{Name: "open", ID: 3, Isolation: api.IsolationNone})
	expect.Eventually(t, "tenant added", within, r.converged)
	if !strings.Contains(r.nft.Dump(), "tenant-3") {
		t.Fatal("no chain for the new tenant")
	}
	// Removals.
	r.src.del(api.KindAddress, "a3")
	r.src.del(api.KindHost, "h2")
	expect.Eventually(t, "removals", within, r.converged)
	if hasRoute(r, a3.IP.String()+"/32") || hasRoute(r, "10.2.0.0/16") {
		t.Fatalf("stale routes: %v", r.kernel.Routes())
	}
	// Unknown kinds are ignored; a malformed object makes the agent re-read a snapshot.
	before := r.src.snapshotCalls()
	r.src.event(api.Event{Type: api.EventPut, Kind: "gadget", Name: "x", Object: []byte(`{}`)})
	r.src.raw(api.Event{Type: api.EventPut, Kind: api.KindTenant, Name: "bad", Object: []byte(`{"id": "nope"}`)})
	expect.Eventually(t, "re-snapshot after a malformed event", within, func() error {
		if r.src.snapshotCalls() <= before {
			return errors.New("no new snapshot")
		}
		return nil
	})
	expect.Eventually(t, "converged after re-snapshot", within, r.converged)
}

func hasRoute(r *rig, dst string) bool {
	for _, fr := range r.kernel.Routes() {
		if fr.Dst.String() == dst && fr.Protocol == route.Protocol {
			return true
		}
	}
	return false
}

func TestGoneMeansNewSnapshot(t *testing.T) {
	w := newWorld()
	r := newRig(t, w.snap)
	r.run(time.Hour)
	expect.Eventually(t, "initial", within, r.converged)
	before := r.src.snapshotCalls()
	// Changes the agent misses: they happen, then the log is compacted.
	r.src.mu.Lock()
	h3 := w.host("h3", 3)
	b, _ := json.Marshal(h3)
	if _, _, err := r.src.state.Apply(api.Event{Type: api.EventPut, Kind: api.KindHost, Name: "h3", Object: b}); err != nil {
		t.Fatal(err)
	}
	r.src.rev += 5
	r.src.mu.Unlock()
	r.src.compact()
	expect.Eventually(t, "new snapshot", within, func() error {
		if r.src.snapshotCalls() <= before {
			return errors.New("none")
		}
		return nil
	})
	expect.Eventually(t, "converged with the missed host", within, r.converged)
	if !hasRoute(r, "10.3.0.0/16") {
		t.Fatal("no route to h3")
	}
}

func TestDriftRepairedAtResync(t *testing.T) {
	w := newWorld()
	w.snap.Addresses = []api.Address{w.address("a1", 1, "acme", 1, 1, "romana1")}
	r := newRig(t, w.snap)
	foreign := hoststate.Route{Dst: mustPrefix("172.16.0.0/12"), Via: w.snap.Hosts[1].IP}
	r.kernel.AddRoute(foreign, 4)
	r.run(20 * time.Millisecond)
	expect.Eventually(t, "initial", within, r.converged)

	r.kernel.DeleteRoute(mustPrefix("10.2.0.0/16"))
	r.kernel.DeleteRoute(mustPrefix(w.snap.Addresses[0].IP.String() + "/32"))
	tx := r.nft.NewTransaction()
	tx.Flush(&knftables.Chain{Name: "tenant-1"})
	tx.Delete(&knftables.Element{Map: "tenants-net1", Key: []string{"10.0.16.0"}})
	if err := r.nft.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if r.converged() == nil {
		t.Fatal("drift did not register")
	}
	expect.Eventually(t, "drift repaired", within, r.converged)

	tx = r.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := r.nft.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "deleted table restored", within, r.converged)
	if rs := r.kernel.Routes(); !containsRoute(rs, foreign, 4) {
		t.Fatalf("foreign route lost: %v", rs)
	}
}

func containsRoute(rs []route.FakeRoute, r hoststate.Route, proto int) bool {
	for _, x := range rs {
		if x.Route == r && x.Protocol == proto {
			return true
		}
	}
	return false
}

// An endpoint route whose veth does not exist yet is retried soon, not
// only at the next resync.
func TestPendingRouteRetried(t *testing.T) {
	w := newWorld()
	r := newRig(t, w.snap)
	r.run(time.Hour)
	expect.Eventually(t, "initial", within, r.converged)
	a := w.address("late", 1, "acme", 1, 9, "romanalate")
	r.src.put(api.KindAddress, "late", a)
	expect.Eventually(t, "pending reported", within, func() error {
		if g := metric(t, r.reg, "romana_agent_routes_pending"); g != 1 {
			return fmt.Errorf("gauge %v", g)
		}
		return nil
	})
	r.kernel.AddLink("romanalate", "veth")
	expect.Eventually(t, "route installed once the veth exists", within, func() error {
		if !hasRoute(r, a.IP.String()+"/32") {
			return fmt.Errorf("routes %v", r.kernel.Routes())
		}
		return nil
	})
}

func TestUnregisteredHostIsUnhealthyUntilRegistered(t *testing.T) {
	w := newWorld()
	h1 := w.snap.Hosts[0]
	w.snap.Hosts = w.snap.Hosts[1:]
	r := newRig(t, w.snap)
	r.run(time.Hour)
	expect.Eventually(t, "unhealthy", within, func() error {
		if err := r.metrics.Health(); err == nil || !strings.Contains(err.Error(), `"h1"`) {
			return fmt.Errorf("health %v", err)
		}
		return nil
	})
	if d := r.nft.Dump(); d != "" {
		t.Fatalf("applied a ruleset for an unregistered host:\n%s", d)
	}
	r.src.put(api.KindHost, "h1", h1)
	expect.Eventually(t, "converged once registered", within, r.converged)
	expect.Eventually(t, "healthy", within, r.metrics.Health)
}

func TestMetricsAndHealthz(t *testing.T) {
	w := newWorld()
	w.snap.Addresses = []api.Address{w.address("a1", 1, "acme", 1, 1, "romana1")}
	r := newRig(t, w.snap)
	srv := httptest.NewServer(r.metrics.Handler(r.reg))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz before running: %d", code)
	}
	r.run(time.Hour)
	expect.Eventually(t, "healthz ok", within, func() error {
		if code, body := get("/healthz"); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	st := r.desired()
	_, body := get("/metrics")
	for _, want := range []string{
		"romana_agent_reconciles_total",
		fmt.Sprintf("romana_agent_nft_rules %d", st.Firewall.RuleCount()),
		fmt.Sprintf("romana_agent_routes %d", len(st.Routes)),
		"romana_agent_last_success_timestamp_seconds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestCleanupRemovesOnlyOurs(t *testing.T) {
	w := newWorld()
	w.snap.Addresses = []api.Address{w.address("a1", 1, "acme", 1, 1, "romana1")}
	r := newRig(t, w.snap)
	foreign := hoststate.Route{Dst: mustPrefix("172.16.0.0/12"), Via: w.snap.Hosts[1].IP}
	r.kernel.AddRoute(foreign, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Source: r.src, Routes: r.routes, Firewall: r.fw})
	}()
	expect.Eventually(t, "converged", within, r.converged)
	cancel()
	<-done
	if err := r.converged(); err != nil {
		t.Fatalf("stopping the agent removed state: %v", err)
	}
	if err := Cleanup(context.Background(), r.routes, r.fw); err != nil {
		t.Fatal(err)
	}
	if d := r.nft.Dump(); d != "" {
		t.Fatalf("table after Cleanup:\n%s", d)
	}
	if rs := r.kernel.Routes(); len(rs) != 1 || rs[0].Route != foreign {
		t.Fatalf("routes after Cleanup: %v", rs)
	}
	if _, ok := r.kernel.Link(hoststate.GatewayLink); ok {
		t.Fatal("gateway link after Cleanup")
	}
	if _, ok := r.kernel.Link("romana1"); !ok {
		t.Fatal("Cleanup removed an endpoint veth")
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource(newWorld().snap)
	rt, _ := route.NewFake(nil)
	fw, _ := firewall.NewFake(nil)
	for name, cfg := range map[string]Config{
		"no host":  {Source: src, Routes: rt, Firewall: fw},
		"no parts": {Host: "h1"},
		"bad mode": {Host: "h1", Mode: "vxlan", Source: src, Routes: rt, Firewall: fw},
	} {
		if err := Run(ctx, cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// metric returns the value of the gauge or counter name (one sample), or
// -1 when g has none.
func metric(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			if c := mf.GetMetric()[0].GetCounter(); c != nil {
				return c.GetValue()
			}
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// countingFirewall counts Apply calls, and those that returned.
type countingFirewall struct {
	Firewall
	mu       sync.Mutex
	calls    int
	returned int
}

func (c *countingFirewall) Apply(ctx context.Context, rs hoststate.Ruleset) (bool, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.returned++
		c.mu.Unlock()
	}()
	return c.Firewall.Apply(ctx, rs)
}

func (c *countingFirewall) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func (c *countingFirewall) done() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.returned
}

// Endpoint changes do not touch nftables; tenant changes do.
func TestEndpointChangesSkipFirewall(t *testing.T) {
	w := newWorld()
	r := newRig(t, w.snap)
	cf := &countingFirewall{Firewall: r.fw}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: cf})
	}()
	defer func() { cancel(); <-done }()
	expect.Eventually(t, "initial", within, r.converged)
	before := cf.n()
	r.kernel.AddLink("romana5", "veth")
	a := w.address("a5", 1, "acme", 1, 5, "romana5")
	r.src.put(api.KindAddress, "a5", a)
	expect.Eventually(t, "endpoint routed", within, func() error {
		if !hasRoute(r, a.IP.String()+"/32") {
			return errors.New("no route")
		}
		return nil
	})
	if cf.n() != before {
		t.Fatalf("an endpoint change called Firewall.Apply %d times", cf.n()-before)
	}
	r.src.put(api.KindTenant, "gamma", api.Tenant{Name: "gamma", ID: 7})
	expect.Eventually(t, "tenant applied", within, r.converged)
	if cf.n() == before {
		t.Fatal("a tenant change did not apply the firewall")
	}
}

// A foreign route holding the destination of a desired route survives:
// the agent reports the conflict (gauge, warning, /status) at every
// reconciliation and installs its route once the foreign one is gone.
func TestForeignRouteConflictReported(t *testing.T) {
	w := newWorld()
	r := newRig(t, w.snap)
	h2 := w.snap.Hosts[1].Slots[0].CIDR
	admin := hoststate.Route{Dst: h2, Via: netip.MustParseAddr("192.168.0.254")}
	r.kernel.AddRoute(admin, 4) // proto static
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: 20 * time.Millisecond, Source: r.src, Routes: r.routes, Firewall: r.fw, Metrics: r.metrics,
			Log: slog.New(slog.NewTextHandler(&logs, nil)), MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	expect.Eventually(t, "conflict reported", within, func() error {
		g, health := metric(t, r.reg, "romana_agent_route_conflicts"), r.metrics.Health()
		if g != 1 || health != nil {
			return fmt.Errorf("gauge %v, health %v", g, health)
		}
		return nil
	})
	st := r.metrics.Status()
	if len(st.RouteConflicts) != 1 || !strings.Contains(st.RouteConflicts[0], h2.String()+" via 192.168.0.2: destination held by foreign route "+h2.String()+" via 192.168.0.254") {
		t.Fatalf("status: %+v", st)
	}
	srv := httptest.NewServer(r.metrics.Handler(r.reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"routeConflicts": [`) || !strings.Contains(string(body), "via 192.168.0.254") {
		t.Fatalf("/status: %s", body)
	}
	// Several resyncs later the foreign route is still there, warned about once.
	reconciles := func() float64 {
		mfs, _ := r.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "romana_agent_reconciles_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return -1
	}
	n := reconciles()
	expect.Eventually(t, "three more reconciliations", within, func() error {
		if got := reconciles(); got < n+3 {
			return fmt.Errorf("%v reconciliations, want %v", got, n+3)
		}
		return nil
	})
	if rs := r.kernel.Routes(); !slices.ContainsFunc(rs, func(fr route.FakeRoute) bool { return fr.Route == admin && fr.Protocol == 4 }) {
		t.Fatalf("the foreign route was overwritten: %v", rs)
	}
	if l := logs.String(); strings.Count(l, "route not installed") != 1 || !strings.Contains(l, "prefix="+h2.String()) || !strings.Contains(l, "via 192.168.0.254 proto 4") {
		t.Fatalf("want one warning naming the prefix and the foreign route:\n%s", l)
	}
	// The administrator removes it: the next resync installs ours.
	r.kernel.DeleteRoute(h2)
	expect.Eventually(t, "converged after the foreign route went", within, func() error {
		if g := metric(t, r.reg, "romana_agent_route_conflicts"); g != 0 {
			return fmt.Errorf("gauge %v", g)
		}
		return r.converged()
	})
	if l := logs.String(); !strings.Contains(l, "route conflict resolved") {
		t.Fatalf("resolution not logged:\n%s", l)
	}
}

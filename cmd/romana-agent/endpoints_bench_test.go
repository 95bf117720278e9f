package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/romana/romana/api"
	"github.com/romana/romana/bench/workload"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// BenchmarkAgentEndpoints measures what endpoints cost one real
// romana-agent (this test binary as the agent, in a simulated host's
// namespace with real nft and netlink, following a romanad over TLS as the
// other agent benchmarks do): its resident set, its Go heap, its CPU when
// idle and its CPU per endpoint added or removed, at N endpoints on its
// host beside the same at a base of 100, in one run.
//
// An endpoint is what the CNI path leaves on a host: an address allocated
// by romanad to the host (tenant t0..t9, segment s0 or s1) whose Interface
// is the host end of a real veth pair, up, in the host's namespace; the
// other end, up and holding the address as a /32, is in a pod namespace
// (one per 1,000 endpoints rather than one each, which the agent cannot
// tell: it never looks into them); the agent installs the endpoint's /32
// route to the veth. romanad also holds 100 policies over the 10 tenants
// (bench/workload), so the agent's nft table is not empty; endpoints add
// nothing to it (only tenants, segments and policies do).
//
// The run is A-B-B-A: 100 endpoints (A1), N (B1, B2), 100 again (A2). At
// each point: idle CPU over ROMANA_BENCH_IDLE (default 30s, after 2 s of
// quiet) with the agent's default --resync (10s) and nothing changing;
// then memory (VmRSS
// from /proc/PID/status, median of 20 reads 250 ms apart, and
// go_memstats_heap_inuse_bytes from the agent's /metrics, the least of
// the same reads, as in "Agent memory" of docs/benchmarks.md, and the
// heap goal of the last GC, go_memstats_next_gc_bytes, about twice the
// heap live after it); then churn:
// ROMANA_BENCH_CHURN (default 10) endpoints added one at a time (veth
// made, address allocated, wait for the agent's route in the kernel) and
// then removed one at a time (address released, wait for the agent to
// delete the route, veth deleted by the benchmark, as the agent's CNI
// server would). Between A1 and B1 the N-100 endpoints are added at once
// (all allocations as fast as 16 clients get them), between B2 and A2
// removed at once: bulk-*-cpu-ms is that CPU per endpoint. CPU is the
// agent's own (user and system, /proc/PID/stat) plus that of the
// processes it ran and waited for (nft), in 10 ms ticks. Nothing timed is
// asserted; the route count in the kernel is checked at every point.
//
//	go test ./cmd/romana-agent -run '^$' -bench 'AgentEndpoints/endpoints=10000$' -benchtime 1x
func BenchmarkAgentEndpoints(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) { agentEndpoints(b, n) })
	}
}

// epBase is the comparison point's endpoint count.
const epBase = 100

// epRun is one BenchmarkAgentEndpoints run: one host, its agent, and the
// pod namespaces holding the far ends of its endpoints' veths.
type epRun struct {
	b    *testing.B
	c    *cluster
	ctx  context.Context
	host *sim.Host
	hh   *netlink.Handle // in the host's namespace
	pods []*sim.Namespace
	next int // the last endpoint number given
}

type epEndpoint struct {
	name, iface, peer string
	pod               *sim.Namespace
	ip                netip.Addr
}

// epPoint is what was measured at one point of the run.
type epPoint struct {
	n                   int
	idleSelf, idleChild float64 // ms of CPU per minute
	rss, heap, goal     float64 // MiB
	addCPU, delCPU      float64 // ms per endpoint, agent and children
	addP50, delP50      float64 // ms
}

func agentEndpoints(b *testing.B, n int) {
	simtest.Require(b, "nft")
	idle := 30 * time.Second
	if s := os.Getenv("ROMANA_BENCH_IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			b.Fatalf("ROMANA_BENCH_IDLE=%q: want a duration of at least 1s", s)
		}
		idle = d
	}
	churn := 10
	if s := os.Getenv("ROMANA_BENCH_CHURN"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 1000 {
			b.Fatalf("ROMANA_BENCH_CHURN=%q: want 1 to 1000", s)
		}
		churn = v
	}
	const tenants = 10
	ctx := context.Background()
	lab := simtest.New(b)
	c := &cluster{t: b, ctx: ctx, lab: lab, logDir: b.TempDir(), credDir: b.TempDir(),
		hosts: map[string]*sim.Host{}, cidrs: map[string]netip.Prefix{}, eps: map[string]*sim.Endpoint{},
		agents: map[string]*agentProc{}, resync: 10 * time.Second} // the agent's default
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	c.exe = exe
	c.srv, c.ctl = startRomanad(b, lab)
	b.Cleanup(func() {
		for name := range c.agents {
			c.stopAgent(name)
		}
	})
	cl := c.srv.Client
	// 8 bits of host, 4 of tenant, 2 of segment: 1,024 endpoints per
	// segment and host.
	if _, err := cl.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 2}}}); err != nil {
		b.Fatal(err)
	}
	for i := range tenants {
		name := fmt.Sprintf("t%d", i)
		if _, err := cl.AddTenant(ctx, api.Tenant{Name: name}); err != nil {
			b.Fatal(err)
		}
		for _, s := range []string{"s0", "s1"} {
			if _, err := cl.AddSegment(ctx, api.Segment{Tenant: name, Name: s}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, p := range workload.Policies(100, tenants) {
		if _, err := cl.PutPolicy(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	ip := netip.MustParseAddr("192.168.77.1")
	h, err := lab.AddHost(ctx, "h1", netip.PrefixFrom(ip, 24))
	if err != nil {
		b.Fatal(err)
	}
	c.hosts["h1"] = h
	if _, err := cl.AddHost(ctx, api.Host{Name: "h1", IP: ip}); err != nil {
		b.Fatal(err)
	}
	hh, err := h.Handle()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(hh.Close)
	r := &epRun{b: b, c: c, ctx: ctx, host: h, hh: hh}

	t0 := time.Now()
	r.addBulk("e", epBase)
	r.writeCredential()
	c.startAgent("h1", "--log-level", "info")
	r.converged(epBase, 2*time.Minute)
	b.Logf("agent up with %d endpoints in %v", epBase, time.Since(t0).Round(time.Millisecond))

	a1 := r.point(epBase, idle, churn)
	// The bulk: N-100 endpoints at once.
	t0 = time.Now()
	bulk := r.makeEndpoints("b", n-epBase)
	b.Logf("%d veths made in %v", n-epBase, time.Since(t0).Round(time.Millisecond))
	cpu0 := c.agentCPU()
	t0 = time.Now()
	r.allocate(bulk)
	r.converged(n, 10*time.Minute)
	cpu1 := c.agentCPU()
	bulkAdd := cpuMs(cpu0, cpu1) / float64(n-epBase)
	b.Logf("%d endpoints allocated and routed in %v", n-epBase, time.Since(t0).Round(time.Millisecond))
	r.addresses(bulk)
	b1 := r.point(n, idle, churn)
	b2 := r.point(n, idle, churn)
	cpu0 = c.agentCPU()
	t0 = time.Now()
	r.release(bulk)
	r.converged(epBase, 10*time.Minute)
	cpu1 = c.agentCPU()
	bulkDel := cpuMs(cpu0, cpu1) / float64(n-epBase)
	b.Logf("%d endpoints released and unrouted in %v", n-epBase, time.Since(t0).Round(time.Millisecond))
	r.dropPods(bulk)
	a2 := r.point(epBase, idle, churn)

	for _, p := range []epPoint{a1, b1, b2, a2} {
		b.Logf("%5d endpoints: RSS %.1f MiB, heap %.1f MiB (GC goal %.1f MiB), idle %.0f+%.0f ms/min, add %.2f ms CPU (p50 %.1f ms), remove %.2f ms CPU (p50 %.1f ms)",
			p.n, p.rss, p.heap, p.goal, p.idleSelf, p.idleChild, p.addCPU, p.addP50, p.delCPU, p.delP50)
	}
	mean := func(f func(epPoint) float64, x, y epPoint) float64 { return (f(x) + f(y)) / 2 }
	at := func(k int) string { return "@" + strconv.Itoa(k) }
	rep := func(v float64, unit string) { b.ReportMetric(v, unit) }
	rep(a1.rss, "rss-MiB"+at(epBase))
	rep(mean(func(p epPoint) float64 { return p.rss }, b1, b2), "rss-MiB"+at(n))
	rep(a2.rss, "rss-MiB"+at(epBase)+"-after")
	rep(a1.heap, "heap-MiB"+at(epBase))
	rep(mean(func(p epPoint) float64 { return p.heap }, b1, b2), "heap-MiB"+at(n))
	rep(a2.heap, "heap-MiB"+at(epBase)+"-after")
	rep(a1.goal, "gc-goal-MiB"+at(epBase))
	rep(mean(func(p epPoint) float64 { return p.goal }, b1, b2), "gc-goal-MiB"+at(n))
	perEp := float64(n - epBase)
	rep((mean(func(p epPoint) float64 { return p.rss }, b1, b2)-a1.rss)*1024/perEp, "rss-KiB/endpoint")
	rep((mean(func(p epPoint) float64 { return p.heap }, b1, b2)-a1.heap)*1024/perEp, "heap-KiB/endpoint")
	for _, x := range []struct {
		unit string
		f    func(epPoint) float64
	}{
		{"idle-agent-ms/min", func(p epPoint) float64 { return p.idleSelf }},
		{"idle-nft-ms/min", func(p epPoint) float64 { return p.idleChild }},
		{"add-cpu-ms", func(p epPoint) float64 { return p.addCPU }},
		{"del-cpu-ms", func(p epPoint) float64 { return p.delCPU }},
		{"add-p50-ms", func(p epPoint) float64 { return p.addP50 }},
		{"del-p50-ms", func(p epPoint) float64 { return p.delP50 }},
	} {
		rep(mean(x.f, a1, a2), x.unit+at(epBase))
		rep(mean(x.f, b1, b2), x.unit+at(n))
	}
	rep(bulkAdd, "bulk-add-cpu-ms")
	rep(bulkDel, "bulk-del-cpu-ms")
}

func cpuMs(a, b cpuTimes) float64 {
	return float64((b.self-a.self)+(b.children-a.children)) / float64(time.Millisecond)
}

// writeCredential writes the agent's credential (startAgent would too; done
// here so that its cost is outside every figure).
func (r *epRun) writeCredential() { r.c.srv.WriteCredential(r.b, pki.Host("h1"), r.c.credDir) }

// point measures idle CPU, memory and churn with n endpoints in place.
func (r *epRun) point(n int, idle time.Duration, churn int) epPoint {
	r.b.Helper()
	p := epPoint{n: n}
	r.converged(n, 5*time.Minute)
	// Let the work that follows a change (the veths' IPv6 link-local
	// addresses, a report) pass; the idle window then holds three
	// resyncs, as any 30 s of an agent's life does.
	time.Sleep(2 * time.Second)
	cpu0 := r.c.agentCPU()
	t0 := time.Now()
	time.Sleep(idle)
	cpu1 := r.c.agentCPU()
	perMin := float64(time.Minute) / float64(time.Since(t0)) / float64(time.Millisecond)
	p.idleSelf = float64(cpu1.self-cpu0.self) * perMin
	p.idleChild = float64(cpu1.children-cpu0.children) * perMin
	p.rss, p.heap, p.goal = r.memory()

	var add, del []time.Duration
	eps := make([]epEndpoint, 0, churn)
	cpu0 = r.c.agentCPU()
	for range churn {
		e, lat := r.addOne()
		eps = append(eps, e)
		add = append(add, lat)
	}
	cpu1 = r.c.agentCPU()
	for _, e := range eps {
		del = append(del, r.removeOne(e))
	}
	cpu2 := r.c.agentCPU()
	p.addCPU = cpuMs(cpu0, cpu1) / float64(churn)
	p.delCPU = cpuMs(cpu1, cpu2) / float64(churn)
	p.addP50, p.delP50 = p50ms(add), p50ms(del)
	r.converged(n, 5*time.Minute)
	return p
}

func p50ms(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[len(ds)/2].Microseconds()) / 1000
}

// memory is the agent's VmRSS (median of 20 reads 250 ms apart), Go
// heap in use (least of the same reads) and the heap goal the last GC
// set (go_memstats_next_gc_bytes, median: with GOGC=100 about twice the
// heap live after that GC, plus the goroutine stacks), in MiB.
func (r *epRun) memory() (rss, heap, goal float64) {
	r.b.Helper()
	var rs, goals []int64
	least := int64(1 << 62)
	pid := r.c.agents["h1"].cmd.Process.Pid
	for i := range 20 {
		if i > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			r.b.Fatal(err)
		}
		rs = append(rs, procField(string(st), "VmRSS:")*1024)
		out, err := r.c.agentGet("h1", "/metrics", 5*time.Second)
		if err != nil {
			r.b.Fatal(err)
		}
		least = min(least, promValue(r.b, out, "go_memstats_heap_inuse_bytes"))
		goals = append(goals, promValue(r.b, out, "go_memstats_next_gc_bytes"))
	}
	slices.Sort(rs)
	slices.Sort(goals)
	mib := func(v int64) float64 { return float64(v) / (1 << 20) }
	return mib(rs[len(rs)/2]), mib(least), mib(goals[len(goals)/2])
}

// promValue is the value of the metric name (without labels) in a
// Prometheus text exposition.
func promValue(t testing.TB, exposition, name string) int64 {
	t.Helper()
	for l := range strings.Lines(exposition) {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("agent /metrics: %q: %v", l, err)
			}
			return int64(f)
		}
	}
	t.Fatalf("agent /metrics: no %s", name)
	return 0
}

// converged waits until the agent has applied the store's newest
// revision with want routes and none pending, then checks that the
// kernel holds exactly want routes of protocol 190.
func (r *epRun) converged(want int, within time.Duration) {
	r.b.Helper()
	cl := r.c.srv.Client
	st, err := cl.Status(r.ctx)
	if err != nil {
		r.b.Fatal(err)
	}
	rev := st.StoreRevision
	limit := time.Now().Add(within)
	for done, last := false, ""; !done; {
		st, err := cl.Status(r.ctx)
		if err != nil {
			r.b.Fatal(err)
		}
		for _, h := range st.Hosts {
			if h.Host == "h1" && h.Report != nil {
				last = fmt.Sprintf("revision %d of %d, %d routes, %d pending, error %q", h.Revision, rev, h.Report.Routes, h.Report.RoutesPending, h.Report.Error)
				done = h.Revision >= rev && h.Report.Routes == want && h.Report.RoutesPending == 0 && h.Report.Error == ""
			}
		}
		if !done && time.Now().After(limit) {
			r.b.Fatalf("agent did not apply revision %d with %d routes within %v: %s", rev, want, within, last)
		}
		if !done {
			time.Sleep(50 * time.Millisecond)
		}
	}
	out, err := r.host.Exec(r.ctx, "ip", "-4", "route", "show", "proto", "190")
	if err != nil {
		r.b.Fatal(err)
	}
	if got := strings.Count(out, "\n"); got != want {
		r.b.Fatalf("kernel holds %d routes of protocol 190, want %d", got, want)
	}
}

// makeEndpoints makes count veth pairs (host end rv-<prefix>N up in the
// host; far end <prefix>N-p up in a new pod namespace per 1,000) with
// `ip -batch`, without addresses yet.
func (r *epRun) makeEndpoints(prefix string, count int) []epEndpoint {
	r.b.Helper()
	var eps []epEndpoint
	var hostCmds strings.Builder
	podCmds := map[*sim.Namespace]*strings.Builder{}
	for i := range count {
		if i%1000 == 0 {
			pod, err := r.c.lab.AddNamespace(r.ctx, fmt.Sprintf("p%s%d", prefix, len(r.pods)))
			if err != nil {
				r.b.Fatal(err)
			}
			r.pods = append(r.pods, pod)
			podCmds[pod] = &strings.Builder{}
		}
		pod := r.pods[len(r.pods)-1]
		r.next++
		e := epEndpoint{name: fmt.Sprintf("%s%d", prefix, r.next), iface: fmt.Sprintf("rv-%s%d", prefix, r.next),
			peer: fmt.Sprintf("p%d", r.next), pod: pod}
		eps = append(eps, e)
		fmt.Fprintf(&hostCmds, "link add %s up type veth peer name %s netns %s\n", e.iface, e.peer, pod.Name)
		fmt.Fprintf(podCmds[pod], "link set %s up\n", e.peer)
	}
	r.batch(r.host.Name+" (host)", r.host.Namespace.Name, hostCmds.String())
	for pod, cmds := range podCmds {
		r.batch(pod.Name, pod.Name, cmds.String())
	}
	return eps
}

// batch runs `ip -n ns -batch -` with cmds.
func (r *epRun) batch(what, ns, cmds string) {
	r.b.Helper()
	cmd := exec.CommandContext(r.ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		r.b.Fatalf("ip -batch in %s: %v: %s", what, err, out)
	}
}

// allocate allocates every endpoint's address (16 clients at once),
// naming its host veth, as the CNI path does.
func (r *epRun) allocate(eps []epEndpoint) {
	r.b.Helper()
	r.parallel(eps, func(i int, e *epEndpoint) error {
		a, err := r.c.srv.Client.Allocate(r.ctx, epRequest(i, *e))
		e.ip = a.IP
		return err
	})
}

// epRequest is the address request of the i-th endpoint: tenants and
// segments in turn.
func epRequest(i int, e epEndpoint) api.AddressRequest {
	return api.AddressRequest{Name: e.name, Host: "h1", Tenant: fmt.Sprintf("t%d", i%10), Segment: fmt.Sprintf("s%d", i/10%2), Interface: e.iface}
}

// release releases every endpoint's address (16 clients at once).
func (r *epRun) release(eps []epEndpoint) {
	r.b.Helper()
	r.parallel(eps, func(_ int, e *epEndpoint) error { return r.c.srv.Client.Release(r.ctx, e.name) })
}

func (r *epRun) parallel(eps []epEndpoint, fn func(i int, e *epEndpoint) error) {
	r.b.Helper()
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := fn(i, &eps[i]); err != nil {
					errs <- fmt.Errorf("endpoint %s: %w", eps[i].name, err)
					return
				}
			}
		})
	}
	for i := range eps {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			wg.Wait()
			r.b.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		r.b.Fatal(err)
	default:
	}
}

// addresses puts each endpoint's address on its far end (as the CNI path
// does inside the container; nothing the agent sees).
func (r *epRun) addresses(eps []epEndpoint) {
	r.b.Helper()
	cmds := map[*sim.Namespace]*strings.Builder{}
	for _, e := range eps {
		if cmds[e.pod] == nil {
			cmds[e.pod] = &strings.Builder{}
		}
		fmt.Fprintf(cmds[e.pod], "addr add %s/32 dev %s\n", e.ip, e.peer)
	}
	for pod, c := range cmds {
		r.batch(pod.Name, pod.Name, c.String())
	}
}

// addBulk makes, allocates and addresses count endpoints.
func (r *epRun) addBulk(prefix string, count int) []epEndpoint {
	eps := r.makeEndpoints(prefix, count)
	r.allocate(eps)
	r.addresses(eps)
	return eps
}

// dropPods deletes the pod namespaces of eps (their addresses released):
// the kernel deletes their veths with them, far faster than one by one;
// then waits until the host has none of those links left.
func (r *epRun) dropPods(eps []epEndpoint) {
	r.b.Helper()
	drop := map[*sim.Namespace]bool{}
	for _, e := range eps {
		drop[e.pod] = true
	}
	for pod := range drop {
		if out, err := exec.CommandContext(r.ctx, "ip", "netns", "del", pod.Name).CombinedOutput(); err != nil {
			r.b.Fatalf("delete namespace %s: %v: %s", pod.Name, err, out)
		}
	}
	r.pods = slices.DeleteFunc(r.pods, func(p *sim.Namespace) bool { return drop[p] })
	gone := map[string]bool{}
	for _, e := range eps {
		gone[e.iface] = true
	}
	limit := time.Now().Add(5 * time.Minute)
	for {
		links, err := r.hh.LinkList()
		if err != nil {
			r.b.Fatal(err)
		}
		left := 0
		for _, l := range links {
			if gone[l.Attrs().Name] {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(limit) {
			r.b.Fatalf("%d veths still in the host 5 min after their namespaces were deleted", left)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// churnPod is the pod namespace of the endpoints added one at a time.
func (r *epRun) churnPod() *sim.Namespace {
	for _, p := range r.pods {
		if strings.HasSuffix(p.Name, "-pc") {
			return p
		}
	}
	pod, err := r.c.lab.AddNamespace(r.ctx, "pc")
	if err != nil {
		r.b.Fatal(err)
	}
	r.pods = append(r.pods, pod)
	return pod
}

// addOne adds one endpoint as the CNI path would: its veth pair (both
// ends up), its address allocated naming the host end, the address on
// the far end. It returns the time from the allocation's start until
// the agent's route to it is in the host's kernel.
func (r *epRun) addOne() (epEndpoint, time.Duration) {
	r.b.Helper()
	pod := r.churnPod()
	r.next++
	e := epEndpoint{name: fmt.Sprintf("c%d", r.next), iface: fmt.Sprintf("rv-c%d", r.next), peer: fmt.Sprintf("p%d", r.next), pod: pod}
	ph, fd := r.podHandle(pod)
	defer ph.Close()
	defer fd.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: e.iface, Flags: net.FlagUp}, PeerName: e.peer, PeerNamespace: netlink.NsFd(int(fd))}
	if err := r.hh.LinkAdd(veth); err != nil {
		r.b.Fatalf("add veth %s: %v", e.iface, err)
	}
	hl, err := r.hh.LinkByName(e.iface)
	if err != nil {
		r.b.Fatal(err)
	}
	pl, err := ph.LinkByName(e.peer)
	if err != nil {
		r.b.Fatal(err)
	}
	if err := ph.LinkSetUp(pl); err != nil {
		r.b.Fatal(err)
	}
	t0 := time.Now()
	a, err := r.c.srv.Client.Allocate(r.ctx, epRequest(r.next, e))
	if err != nil {
		r.b.Fatal(err)
	}
	e.ip = a.IP
	r.waitRoute(e, hl.Attrs().Index, true)
	lat := time.Since(t0)
	if err := ph.AddrAdd(pl, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(e.ip.AsSlice()), Mask: net.CIDRMask(32, 32)}}); err != nil {
		r.b.Fatal(err)
	}
	return e, lat
}

// removeOne removes an endpoint as the CNI path would: its address
// released, then (once the agent deleted its route) its veth deleted. It
// returns the time from the release's start until the route is gone.
func (r *epRun) removeOne(e epEndpoint) time.Duration {
	r.b.Helper()
	hl, err := r.hh.LinkByName(e.iface)
	if err != nil {
		r.b.Fatal(err)
	}
	t0 := time.Now()
	if err := r.c.srv.Client.Release(r.ctx, e.name); err != nil {
		r.b.Fatal(err)
	}
	r.waitRoute(e, hl.Attrs().Index, false)
	lat := time.Since(t0)
	if err := r.hh.LinkDel(hl); err != nil {
		r.b.Fatalf("delete veth %s: %v", e.iface, err)
	}
	return lat
}

// waitRoute waits until the host's kernel routes e's address to the link
// index (present) or no longer does (!present): one route lookup per
// millisecond, never a dump of the table.
func (r *epRun) waitRoute(e epEndpoint, index int, present bool) {
	r.b.Helper()
	limit := time.Now().Add(time.Minute)
	for {
		rs, err := r.hh.RouteGet(net.IP(e.ip.AsSlice()))
		there := err == nil && len(rs) > 0 && rs[0].LinkIndex == index
		if there == present {
			return
		}
		if time.Now().After(limit) {
			r.b.Fatalf("route to %s via %s present=%v: still not after a minute (%v, %v)", e.ip, e.iface, present, rs, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *epRun) podHandle(pod *sim.Namespace) (*netlink.Handle, netns.NsHandle) {
	r.b.Helper()
	ph, err := pod.Handle()
	if err != nil {
		r.b.Fatal(err)
	}
	fd, err := netns.GetFromPath(pod.Path)
	if err != nil {
		r.b.Fatal(err)
	}
	return ph, fd
}

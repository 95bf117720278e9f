package main

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/bench/workload"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// BenchmarkPolicyEnforcementAgents measures, on real agents, the time from
// one policy change at romanad to its enforcement on every host: 20
// romana-agent processes, each in its own host namespace with real nft,
// following a romanad (embedded etcd, TLS over the simulated underlay)
// that holds 100 tenants and N policies (bench/workload). Each iteration
// PUTs policy "mark" with a new port; an agent has enforced it when its
// status report says it applied that revision (the agent reports right
// after each reconciliation, once its nft transaction returned). The
// latency of a host is romanad's arrival time of that report minus the
// PUT's start, both on this process's clock; p50/p99/max are over all
// hosts and changes. ROMANA_BENCH_AGENTS overrides the 20 agents;
// ROMANA_BENCH_AGENT_EXE runs another romana-agent binary instead of this
// test binary (to compare against another tree's agent in the same lab
// setup); ROMANA_BENCH_AGENT_FLAGS adds flags to every agent (split on
// spaces, e.g. "--stats-interval 0"); ROMANA_BENCH_POLL sets how often the
// harness asks romanad's status during a change (default 20ms);
// ROMANA_BENCH_PROFILE=FILE writes this process's CPU profile over the
// measured changes. It also reports the CPU time the agents spent during
// the measured changes, per agent and change: their own (agent-cpu-ms)
// and that of the processes they ran and waited for (child-cpu-ms: nft),
// from /proc/PID/stat; and this process's (romanad, its embedded etcd and
// the harness), per change (romanad-cpu-ms).
//
//	go test ./cmd/romana-agent -run '^$' -bench PolicyEnforcementAgents -benchtime 20x
func BenchmarkPolicyEnforcementAgents(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) { enforcementAgents(b, n) })
	}
}

func enforcementAgents(b *testing.B, n int) {
	agents := 20
	if s := os.Getenv("ROMANA_BENCH_AGENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 200 {
			b.Fatalf("ROMANA_BENCH_AGENTS=%q: want 1 to 200", s)
		}
		agents = v
	}
	const tenants = 100
	lab := simtest.New(b)
	c := &cluster{t: b, ctx: context.Background(), lab: lab, logDir: b.TempDir(), credDir: b.TempDir(),
		hosts: map[string]*sim.Host{}, cidrs: map[string]netip.Prefix{}, eps: map[string]*sim.Endpoint{},
		agents: map[string]*agentProc{}, resync: time.Hour}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	c.exe = exe
	if e := os.Getenv("ROMANA_BENCH_AGENT_EXE"); e != "" {
		c.exe = e
	}
	agentFlags := []string{"--log-level", "info"}
	if f := os.Getenv("ROMANA_BENCH_AGENT_FLAGS"); f != "" {
		agentFlags = append(agentFlags, strings.Fields(f)...)
	}
	c.srv, c.ctl = startRomanad(b, lab)
	b.Cleanup(func() {
		for name := range c.agents {
			c.stopAgent(name)
		}
	})
	ctx := c.ctx
	cl := c.srv.Client
	if _, err := cl.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 2}}}); err != nil {
		b.Fatal(err)
	}
	for i := range tenants {
		name := fmt.Sprintf("t%d", i)
		if _, err := cl.AddTenant(ctx, api.Tenant{Name: name}); err != nil {
			b.Fatal(err)
		}
		if _, err := cl.AddSegment(ctx, api.Segment{Tenant: name, Name: "s0"}); err != nil {
			b.Fatal(err)
		}
	}
	load := time.Now()
	work := make(chan api.Policy)
	errs := make(chan error, 8)
	var loaders sync.WaitGroup
	for range 8 {
		loaders.Go(func() {
			for p := range work {
				if _, err := cl.PutPolicy(ctx, p); err != nil {
					errs <- fmt.Errorf("put policy %s: %w", p.Name, err)
					return
				}
			}
		})
	}
	for _, p := range workload.Policies(n, tenants) {
		select {
		case work <- p:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(work)
	loaders.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("%d policies loaded in %v", n, time.Since(load).Round(time.Millisecond))

	var names []string
	for i := range agents {
		name := fmt.Sprintf("h%d", i+1)
		ip := netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)})
		h, err := lab.AddHost(ctx, name, netip.PrefixFrom(ip, 24))
		if err != nil {
			b.Fatal(err)
		}
		c.hosts[name] = h
		if _, err := cl.AddHost(ctx, api.Host{Name: name, IP: ip}); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
	// The agents write their CNI credentials next to their own; they are
	// started one by one so that the first full table loads do not all
	// compete at once, then all must have applied the store's revision.
	start := time.Now()
	for _, name := range names {
		c.srv.WriteCredential(b, pki.Host(name), c.credDir)
		c.startAgent(name, agentFlags...)
	}
	rev, err := cl.Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// The arrival times are romanad's (each report's receipt), so how
	// often the harness asks only delays the next change; every ask costs
	// romanad CPU the agents would have had (2 ms, the interval until
	// 2026-12-01, cost about 15 ms of romanad's CPU per change).
	pollEvery := 20 * time.Millisecond
	if s := os.Getenv("ROMANA_BENCH_POLL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("ROMANA_BENCH_POLL=%q: %v", s, err)
		}
		pollEvery = d
	}
	arrivals := func(want int64, since time.Time, deadline time.Duration) map[string]time.Time {
		got := map[string]time.Time{}
		limit := time.Now().Add(deadline)
		for len(got) < len(names) {
			st, err := cl.Status(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, h := range st.Hosts {
				if h.Revision >= want && !h.LastReport.Before(since) {
					if _, ok := got[h.Host]; !ok {
						got[h.Host] = h.LastReport
					}
				}
			}
			if time.Now().After(limit) {
				b.Fatalf("revision %d: %d of %d agents applied it within %v", want, len(got), len(names), deadline)
			}
			time.Sleep(pollEvery)
		}
		return got
	}
	arrivals(rev.StoreRevision, start, 10*time.Minute)
	b.Logf("%d agents applied %d policies (first full tables) in %v", agents, n, time.Since(start).Round(time.Millisecond))

	var lat []time.Duration
	i := 0
	change := func() {
		i++
		port := uint16(40000 + i%20000)
		t0 := time.Now()
		if _, err := cl.PutPolicy(ctx, api.Policy{Name: "mark", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "t1"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "t2"}}, Protocol: "tcp", Ports: []uint16{port}}}}); err != nil {
			b.Fatal(err)
		}
		st, err := cl.Status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, at := range arrivals(st.StoreRevision, t0, 5*time.Minute) {
			lat = append(lat, at.Sub(t0))
		}
	}
	change() // the first change of a policy that did not exist
	lat = nil
	if f := os.Getenv("ROMANA_BENCH_PROFILE"); f != "" {
		stop := profileCPU(b, f)
		defer stop()
	}
	cpu0, self0 := c.agentCPU(), selfCPU(b)
	changes := 0
	for b.Loop() {
		change()
		changes++
	}
	cpu1, self1 := c.agentCPU(), selfCPU(b)
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(lat)), "samples")
	per := float64(changes * len(names))
	b.ReportMetric(float64(cpu1.self-cpu0.self)/per/float64(time.Millisecond), "agent-cpu-ms")
	b.ReportMetric(float64(cpu1.children-cpu0.children)/per/float64(time.Millisecond), "child-cpu-ms")
	// This process is romanad (with its embedded etcd) and the harness
	// polling its status: its CPU competes with the agents' for the same
	// cores, per change (not per agent).
	b.ReportMetric(float64(self1-self0)/float64(changes)/float64(time.Millisecond), "romanad-cpu-ms")
}

// profileCPU writes this process's CPU profile (romanad's and the
// harness's) over the measured changes to file; stop ends it.
func profileCPU(t testing.TB, file string) (stop func()) {
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatalf("cpu profile: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}
}

// selfCPU is this process's CPU time, user and system.
func selfCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTimes is CPU time of processes: their own (user and system) and
// that of their children they waited for.
type cpuTimes struct{ self, children time.Duration }

// agentCPU sums the CPU times of the running agents (/proc/PID/stat,
// fields 14 to 17, in clock ticks of 10 ms).
func (c *cluster) agentCPU() cpuTimes {
	var t cpuTimes
	for name, p := range c.agents {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			c.t.Fatalf("agent %s: %v", name, err)
		}
		// The command name (field 2) is in parentheses and may hold spaces.
		f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		tick := func(i int) time.Duration { // i: the field's number in proc(5)
			v, err := strconv.ParseInt(f[i-3], 10, 64)
			if err != nil {
				c.t.Fatalf("agent %s: /proc stat field %d: %v", name, i, err)
			}
			return time.Duration(v) * 10 * time.Millisecond
		}
		t.self += tick(14) + tick(15)
		t.children += tick(16) + tick(17)
	}
	return t
}

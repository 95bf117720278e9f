package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/sim"
)

// LabPrefix starts the name of every namespace the benchmark creates:
// rbench-<PID of the run>-..., so that leftovers of a killed run can be
// told from a run still going.
const LabPrefix = "rbench"

// cleanupDeadRuns deletes the namespaces of earlier runs whose process is
// gone (killed before its cleanup), those with no process left in them;
// namespaces of runs still going are not touched.
func cleanupDeadRuns(log *slog.Logger) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	seen := map[int]bool{}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), LabPrefix+"-")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || seen[pid] {
			continue
		}
		seen[pid] = true
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // that run is still going (or the PID is someone else's now)
		}
		if err := sim.CleanupAbandoned(fmt.Sprintf("%s-%d", LabPrefix, pid), 0); err != nil {
			log.Warn("leftovers of an earlier run", "pid", pid, "err", err)
		}
	}
}

// Config is one run's settings.
type Config struct {
	Quick          bool   // 1 s runs, 2 rounds (A-B-B-A once), cross-host only
	Flanneld       string // flanneld binary; "" leaves both flannel conditions out
	FlannelVersion string
	Tenants        int                         // Romana's tenants (default 1,000)
	Policies       int                         // Romana's policies (default 1,000)
	Only           []string                    // conditions to run besides the routed baseline (nil: all)
	Log            *slog.Logger                // debug output; nil discards
	Progress       func(i, n int, what string) // called before each measurement
}

// Conditions lists every condition in measurement order.
var Conditions = []string{Routed, Romana, FlannelVXLAN, FlannelHGW, VXLAN, PTP}

// Run builds the lab, measures every condition and removes everything it
// made, also when ctx is cancelled (Ctrl-C).
func Run(ctx context.Context, cfg Config) (_ Results, retErr error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Tenants == 0 {
		cfg.Tenants = 1000
	}
	if cfg.Policies == 0 {
		cfg.Policies = 1000
	}
	if cfg.Progress == nil {
		cfg.Progress = func(int, int, string) {}
	}
	for _, tool := range []string{"ip", "nft", "iperf3", "sockperf", "etcd", "etcdctl", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Results{}, fmt.Errorf("dataplane benchmark needs %s: %w", tool, err)
		}
	}
	for _, plugin := range []string{"ptp", "bridge", "host-local"} {
		if _, err := os.Stat(cniBinDir + "/" + plugin); err != nil {
			return Results{}, fmt.Errorf("dataplane benchmark needs the reference CNI plugin %s (Debian containernetworking-plugins): %w", plugin, err)
		}
	}
	r := Results{Quick: cfg.Quick, Tenants: cfg.Tenants, Policies: cfg.Policies, RunSeconds: 3, Rounds: 4}
	if cfg.Quick {
		r.RunSeconds, r.Rounds = 1, 2
	}
	r.Placements = []string{Cross, Same}
	if cfg.Quick {
		r.Placements = []string{Cross}
	}
	r.Versions = versions(ctx, cfg.FlannelVersion)
	cleanupDeadRuns(cfg.Log)

	dir, err := os.MkdirTemp("", "romana-bench-dataplane-")
	if err != nil {
		return r, err
	}
	sl, err := sim.New(ctx, fmt.Sprintf("%s-%d", LabPrefix, os.Getpid()), cfg.Log)
	if err != nil {
		os.RemoveAll(dir)
		return r, err
	}
	l := &lab{Lab: sl, log: cfg.Log, dir: dir, hosts: map[string]*sim.Host{}, flows: map[string]flows{},
		fw: map[string]*firewall.Firewall{}, rules: map[string]hoststate.Ruleset{}}
	defer func() {
		for _, ln := range l.listeners {
			ln.Close()
		}
		l.stopAll()
		if err := l.Close(); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("remove lab: %w", err))
		}
		if retErr != nil && ctx.Err() == nil {
			retErr = fmt.Errorf("%w (the daemons' logs are kept in %s)", retErr, dir)
			return
		}
		os.RemoveAll(dir)
	}()
	for i, h := range Hosts {
		if l.hosts[h], err = l.AddHost(ctx, h, netip.MustParsePrefix(fmt.Sprintf(underlay, i+1))); err != nil {
			return r, err
		}
	}
	want := func(c string) bool {
		if c == Routed || cfg.Only == nil {
			return true
		}
		for _, o := range cfg.Only {
			if o == c {
				return true
			}
		}
		return false
	}
	// The routed path's endpoints and routes are Romana's, so Romana is
	// always built; its table is loaded only while Romana is measured.
	cfg.Progress(0, 0, "building the lab: Romana's routes and rules")
	if err := l.buildRomana(ctx, cfg.Tenants, cfg.Policies); err != nil {
		return r, err
	}
	r.Conditions = []string{Routed}
	if want(Romana) {
		r.Conditions = append(r.Conditions, Romana)
	}
	skip := func(c string, err error) {
		r.Skipped = append(r.Skipped, fmt.Sprintf("%s: %v", c, err))
		cfg.Log.Warn("condition left out", "condition", c, "err", err)
	}
	if want(FlannelVXLAN) || want(FlannelHGW) {
		switch {
		case cfg.Flanneld == "":
			skip("flannel", errors.New("no flanneld binary (scripts/flannel.sh builds it)"))
		default:
			cfg.Progress(0, 0, "building the lab: etcd and flanneld")
			if err := l.startEtcd(ctx); err != nil {
				skip("flannel", fmt.Errorf("%w: %s", err, l.logTail("etcd")))
				break
			}
			for _, c := range []string{FlannelVXLAN, FlannelHGW} {
				if !want(c) {
					continue
				}
				if err := l.buildFlannel(ctx, c, cfg.Flanneld); err != nil {
					if ctx.Err() != nil {
						return r, err
					}
					skip(c, fmt.Errorf("%w: %s", err, l.logTail("flanneld-"+flannelNets[c].backend+"-h1")))
					continue
				}
				r.Conditions = append(r.Conditions, c)
			}
		}
	}
	if want(VXLAN) {
		cfg.Progress(0, 0, "building the lab: kernel VXLAN")
		if err := l.buildVXLAN(ctx); err != nil {
			return r, err
		}
		r.Conditions = append(r.Conditions, VXLAN)
	}
	if want(PTP) {
		cfg.Progress(0, 0, "building the lab: ptp CNI")
		if err := l.buildPTP(ctx); err != nil {
			return r, err
		}
		r.Conditions = append(r.Conditions, PTP)
	}
	for _, h := range Hosts {
		t := l.tables(ctx, h)
		if t == "" {
			t = "none (flannel wrote no rule)"
		}
		r.Notes = append(r.Notes, fmt.Sprintf("nftables tables in %s before measuring (Romana's table is added only while Romana is measured): %s", h, t))
	}
	r.Notes = append(r.Notes, l.notes...)
	started := map[string]bool{}
	for _, c := range r.Conditions {
		f := l.flows[c]
		for _, p := range []string{Cross, Same} {
			dst := f.dst(p)
			if started[dst.ns.Name] {
				continue
			}
			started[dst.ns.Name] = true
			if err := l.startServers(ctx, c, p, dst); err != nil {
				return r, err
			}
		}
		if err := l.setRomana(ctx, c == Romana); err != nil {
			return r, err
		}
		for _, p := range []string{Cross, Same} {
			if err := reach(ctx, f.src, f.dst(p), 30*time.Second); err != nil {
				return r, fmt.Errorf("%s %s: %w", c, p, err)
			}
		}
	}

	start := time.Now()
	r.Machine.LoadBefore = loadavg()
	order := Order(r.Conditions, r.Rounds)
	n := r.Rounds * len(r.Conditions) * len(r.Placements) * 4
	i := 0
	connectFor := time.Second
	if cfg.Quick {
		connectFor = time.Second / 2
	}
	for round, conds := range order {
		for _, c := range conds {
			r.Order = append(r.Order, c)
			if err := l.setRomana(ctx, c == Romana); err != nil {
				return r, err
			}
			f := l.flows[c]
			for _, p := range r.Placements {
				dst := f.dst(p)
				add := func(metric string, v float64) {
					r.Samples = append(r.Samples, Sample{Condition: c, Placement: p, Metric: metric, Round: round, Value: v})
				}
				step := func(what string) {
					i++
					cfg.Progress(i, n, fmt.Sprintf("round %d/%d, %s %s, %s", round+1, r.Rounds, c, p, what))
				}
				for _, streams := range []int{1, 8} {
					step(fmt.Sprintf("iperf3 -P %d", streams))
					g, err := iperf(ctx, f.src, dst, r.RunSeconds, streams)
					if err != nil {
						return r, fmt.Errorf("%s %s: %w", c, p, err)
					}
					add(map[int]string{1: Gbit1, 8: Gbit8}[streams], g)
				}
				step("sockperf ping-pong")
				p50, p99, err := sockperf(ctx, f.src, dst, r.RunSeconds) // 0.4 s of it warm-up
				if err != nil {
					return r, fmt.Errorf("%s %s: %w", c, p, err)
				}
				add(LatP50, p50)
				add(LatP99, p99)
				step("TCP connects")
				cps, err := connects(f.src, dst, connectFor)
				if err != nil {
					return r, fmt.Errorf("%s %s: %w", c, p, err)
				}
				add(Connects, cps)
			}
		}
	}
	if err := l.setRomana(ctx, false); err != nil {
		return r, err
	}
	r.Machine.LoadAfter = loadavg()
	r.Seconds = time.Since(start).Seconds()
	r.Cells = Summarize(r.Samples, r.Conditions)
	r.Goals = Goals(r.Cells)
	return r, nil
}

// versions asks each tool its version ("" when it will not say).
func versions(ctx context.Context, flannel string) Versions {
	first := func(args ...string) string {
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return ""
		}
		return firstLine(out)
	}
	v := Versions{Flannel: flannel, Etcd: first("etcd", "--version"), Iperf3: first("iperf3", "--version"), Sockperf: "",
		CNI: first("dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins")}
	if out, err := exec.CommandContext(ctx, "sockperf", "--version").CombinedOutput(); err == nil {
		v.Sockperf = firstLine(out) // "sockperf, version 3.7-no.git" (exits 0 or not)
	} else if s := firstLine(out); strings.HasPrefix(s, "sockperf") {
		v.Sockperf = s
	}
	return v
}

// loadavg is the 1, 5 and 15 minute load averages, "" when unknown.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

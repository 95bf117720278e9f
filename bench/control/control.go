// Package control runs the control-plane benchmarks that live beside their
// packages (CNI ADD/DEL against ptp and bridge, allocations per second,
// policy change to enforcement on 20 real agents, one agent's memory and
// CPU at 10,000 endpoints) as `go test -bench`
// subprocesses, reads the metrics they report, and puts them in the same
// results, table and doc as the dataplane (issue 14, item 2). Each
// benchmark keeps its own baseline and alternation (A-B-...-B-A inside
// the benchmark); this package only runs, parses and reports.
package control

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/romana/romana/bench/docblock"
)

// Bench is one `go test -bench` invocation.
type Bench struct {
	Name      string // short name in the report
	What      string // one line for people
	Pkg       string
	Pattern   string
	Benchtime string
	Quick     string // -bench pattern in a QUICK run ("" = Pattern)
	QuickTime string // -benchtime in a QUICK run
	NotQuick  bool   // left out of a QUICK run (too long for its 3 minutes)
}

// Benches are the control-plane benchmarks, in run order.
var Benches = []Bench{
	{Name: "cni", What: "CNI ADD/DEL p50/p99: romana-cni beside ptp + host-local and bridge + host-local (50 attachments each, interleaved A-B-C-C-B-A)",
		Pkg: "./cni", Pattern: "CNIAddDel", Benchtime: "1x", QuickTime: "1x"},
	{Name: "alloc", What: "address allocations per second through romanad, 64 concurrent clients, on the embedded store (fsync) and on a 3-member etcd (etcd3-*)",
		Pkg: "./server", Pattern: "Allocate64", Benchtime: "3000x", QuickTime: "300x"},
	{Name: "enforce", What: "policy change → enforced on 20 real romana-agent processes (host namespaces, real nft), 100 and 10,000 policies",
		Pkg: "./cmd/romana-agent", Pattern: "PolicyEnforcementAgents", Benchtime: "20x",
		Quick: "PolicyEnforcementAgents/policies=100$", QuickTime: "3x"},
	{Name: "endpoints", What: "one real romana-agent (host namespace, real nft) with 10,000 endpoints on its host (a veth, an address and the agent's route each) beside 100, A-B-B-A: RSS, Go heap, idle CPU per minute, CPU per endpoint added and removed",
		Pkg: "./cmd/romana-agent", Pattern: "AgentEndpoints/endpoints=10000$", Benchtime: "1x", NotQuick: true},
}

// Run is one benchmark's outcome: its metrics by sub-benchmark (the name
// after the benchmark's, "" for none) and unit.
type Run struct {
	Name    string                        `json:"name"`
	What    string                        `json:"what"`
	Command string                        `json:"command"`
	Seconds float64                       `json:"seconds"`
	Metrics map[string]map[string]float64 `json:"metrics"`
	Error   string                        `json:"error,omitempty"`
	// LoadBefore and LoadAfter are the load average around this run.
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`
	// Alone is the command that ran this benchmark on its own and merged
	// it into an earlier run's results ("" when it ran with the others).
	Alone string `json:"alone,omitempty"`
}

// Results is the control part of one `make bench`.
type Results struct {
	Command    string     `json:"command"`
	Quick      bool       `json:"quick"`
	LoadBefore string     `json:"load_before"`
	LoadAfter  string     `json:"load_after"`
	Seconds    float64    `json:"seconds"`
	Runs       []Run      `json:"runs"`
	Goals      []GoalRead `json:"goals"`
}

// ParseBench reads `go test -bench` output: for every result line
// ("BenchmarkX/sub-2  N  v1 unit1  v2 unit2 ..."), its metrics keyed by the
// sub-benchmark name (without the -GOMAXPROCS suffix; "" when there is
// none).
func ParseBench(out, pattern string) map[string]map[string]float64 {
	res := map[string]map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		sub := ""
		if _, s, ok := strings.Cut(name, "/"); ok {
			sub = s
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			m[f[i+1]] = v
		}
		res[sub] = m
	}
	return res
}

// Selected are the benchmarks a run takes: all of them, or in a QUICK
// run those not marked NotQuick.
func Selected(quick bool) []Bench {
	var bs []Bench
	for _, b := range Benches {
		if !quick || !b.NotQuick {
			bs = append(bs, b)
		}
	}
	return bs
}

// RunAll runs the benchmarks (QUICK settings when quick) from the module
// root dir, with env added to each.
func RunAll(ctx context.Context, dir string, quick bool, env []string, progress func(i, n int, what string)) Results {
	return RunBenches(ctx, dir, Selected(quick), quick, env, progress)
}

// Named are the benchmarks of the given names, in run order, or an error
// naming one that does not exist.
func Named(names []string) ([]Bench, error) {
	var bs []Bench
	for _, n := range names {
		i := slices.IndexFunc(Benches, func(b Bench) bool { return b.Name == n })
		if i < 0 {
			var all []string
			for _, b := range Benches {
				all = append(all, b.Name)
			}
			return nil, fmt.Errorf("control benchmark %q: no such benchmark (have %s)", n, strings.Join(all, ", "))
		}
		bs = append(bs, Benches[i])
	}
	slices.SortStableFunc(bs, func(a, b Bench) int {
		return slices.IndexFunc(Benches, func(x Bench) bool { return x.Name == a.Name }) -
			slices.IndexFunc(Benches, func(x Bench) bool { return x.Name == b.Name })
	})
	return bs, nil
}

// RunBenches runs benches (QUICK settings when quick) from the module root
// dir, with env added to each.
func RunBenches(ctx context.Context, dir string, benches []Bench, quick bool, env []string, progress func(i, n int, what string)) Results {
	r := Results{Quick: quick, LoadBefore: loadavg()}
	start := time.Now()
	for i, b := range benches {
		pat, bt := b.Pattern, b.Benchtime
		if quick {
			bt = b.QuickTime
			if b.Quick != "" {
				pat = b.Quick
			}
		}
		args := []string{"test", "-count=1", "-run", "^$", "-bench", pat, "-benchtime", bt, "-timeout", "30m", b.Pkg}
		run := Run{Name: b.Name, What: b.What, Command: "go " + shellJoin(args), LoadBefore: loadavg()}
		progress(i+1, len(benches), b.Name+": "+run.Command)
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		run.Seconds = time.Since(t0).Seconds()
		run.LoadAfter = loadavg()
		run.Metrics = ParseBench(string(out), b.Pattern)
		if err != nil || len(run.Metrics) == 0 {
			run.Error = fmt.Sprintf("%v: %s", err, tail(string(out), 800))
		}
		r.Runs = append(r.Runs, run)
		if ctx.Err() != nil {
			break
		}
	}
	r.Seconds = time.Since(start).Seconds()
	r.LoadAfter = loadavg()
	r.Goals = Goals(r.Runs)
	return r
}

// Merge puts runs, made on their own by the command alone, into old (an
// earlier run's results): each replaces old's run of the same name or is
// added in Benches' order; old's other runs, command and load averages
// stay as they were, and the goals are read again.
func Merge(old Results, alone string, runs []Run) Results {
	out := old
	out.Runs = slices.Clone(old.Runs)
	for _, run := range runs {
		run.Alone = alone
		if i := slices.IndexFunc(out.Runs, func(x Run) bool { return x.Name == run.Name }); i >= 0 {
			out.Runs[i] = run
			continue
		}
		out.Runs = append(out.Runs, run)
	}
	order := func(name string) int {
		if i := slices.IndexFunc(Benches, func(b Bench) bool { return b.Name == name }); i >= 0 {
			return i
		}
		return len(Benches)
	}
	slices.SortStableFunc(out.Runs, func(a, b Run) int { return order(a.Name) - order(b.Name) })
	out.Goals = Goals(out.Runs)
	return out
}

// ReadJSON reads dir/control.json.
func ReadJSON(dir string) (Results, error) {
	var r Results
	err := docblock.ReadJSON(filepath.Join(dir, JSONFile), &r)
	return r, err
}

// GoalRead is one control-plane goal against this run.
type GoalRead struct {
	Goal     string  `json:"goal"`
	Want     string  `json:"want"`
	Measured float64 `json:"measured"`
	Unit     string  `json:"unit"`
	Met      bool    `json:"met"`
	Missing  bool    `json:"missing"`
}

func (g GoalRead) String() string {
	switch {
	case g.Missing:
		return fmt.Sprintf("%s: not measured in this run (goal %s)", g.Goal, g.Want)
	case g.Met:
		return fmt.Sprintf("%s: %.2f%s (goal %s: met)", g.Goal, g.Measured, g.Unit, g.Want)
	}
	return fmt.Sprintf("%s: %.2f%s (goal %s: **missed**)", g.Goal, g.Measured, g.Unit, g.Want)
}

func metric(runs []Run, name, sub, unit string) (float64, bool) {
	for _, r := range runs {
		if r.Name == name {
			v, ok := r.Metrics[sub][unit]
			return v, ok
		}
	}
	return 0, false
}

// Goals reads issue 14's control-plane goals: CNI ADD p50 at most 0.7× the
// reference ptp's, policy change → enforced p99 at most 200 ms on 20
// agents.
func Goals(runs []Run) []GoalRead {
	var gs []GoalRead
	add := func(goal, want, unit string, v float64, ok bool, met func(float64) bool) {
		g := GoalRead{Goal: goal, Want: want, Unit: unit, Measured: v, Missing: !ok}
		g.Met = ok && met(v)
		gs = append(gs, g)
	}
	v, ok := metric(runs, "cni", "", "add-p50-ratio")
	add("CNI ADD p50, romana-cni ÷ ptp + host-local", "≤ 0.70", "", v, ok, func(v float64) bool { return v <= 0.7 })
	for _, n := range []string{"100", "10000"} {
		v, ok := metric(runs, "enforce", "policies="+n, "p99-ms")
		add("policy change → enforced p99 on 20 agents, "+n+" policies", "≤ 200 ms", " ms", v, ok, func(v float64) bool { return v <= 200 })
	}
	return gs
}

// Summary is the terminal table of the control part.
func Summary(r Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "control plane (each benchmark alternates its own baseline in the same run):\n")
	for _, run := range r.Runs {
		if run.Error != "" {
			fmt.Fprintf(&b, "  %s: FAILED (%s)\n", run.Name, firstLine(run.Error))
			continue
		}
		fmt.Fprintf(&b, "  %s: %s\n", run.Name, metricsLine(run))
	}
	for _, g := range r.Goals {
		fmt.Fprintf(&b, "  goal: %s\n", strings.ReplaceAll(g.String(), "**", ""))
	}
	fmt.Fprintf(&b, "  load average %s before, %s after; %.0f s\n", r.LoadBefore, r.LoadAfter, r.Seconds)
	return b.String()
}

// metricsLine lists a run's metrics (ns/op left out: these benchmarks
// report their own units).
func metricsLine(run Run) string {
	var parts []string
	for _, sub := range sortedKeys(run.Metrics) {
		var ms []string
		for _, unit := range sortedKeys(run.Metrics[sub]) {
			if unit == "ns/op" {
				continue
			}
			ms = append(ms, fmt.Sprintf("%s %s", num(run.Metrics[sub][unit]), unit))
		}
		p := strings.Join(ms, ", ")
		if sub != "" {
			p = sub + ": " + p
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// The doc block's markers.
const (
	BeginMarker = "<!-- control:begin (generated by make bench from docs/bench/control.json; edit bench/control/control.go) -->"
	EndMarker   = "<!-- control:end -->"
	JSONFile    = "control.json"
)

// Render is the doc block (without markers).
func Render(r Results) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("Command (root): `%s`%s; load average %s before, %s after; %.0f s.\n\n", r.Command,
		map[bool]string{true: " (QUICK: fewer iterations, 100 policies only, no endpoints run)", false: ""}[r.Quick], r.LoadBefore, r.LoadAfter, r.Seconds)
	for _, run := range r.Runs {
		if run.Alone != "" {
			w("`%s` ran later on its own and was merged in: `%s`; load average %s before, %s after; %.0f s.\n\n",
				run.Name, run.Alone, run.LoadBefore, run.LoadAfter, run.Seconds)
		}
	}
	for _, g := range r.Goals {
		w("- Goal: %s\n", g)
	}
	w("\n| benchmark | command | metrics |\n|---|---|---|\n")
	for _, run := range r.Runs {
		m := metricsLine(run)
		if run.Error != "" {
			m = "**failed**: " + strings.ReplaceAll(firstLine(run.Error), "|", "\\|")
		}
		w("| %s: %s | `%s` | %s |\n", run.Name, run.What, run.Command, m)
	}
	w("\nEvery metric is in [`bench/%s`](bench/%s).\n", JSONFile, JSONFile)
	return b.String()
}

// Write writes dir/control.json and regenerates the block of docPath
// ("" for none).
func Write(dir, docPath string, r Results) error {
	if err := docblock.WriteJSON(filepath.Join(dir, JSONFile), r); err != nil {
		return err
	}
	if docPath == "" {
		return nil
	}
	return docblock.Update(docPath, BeginMarker, EndMarker, Render(r))
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func shellJoin(args []string) string {
	var out []string
	for _, a := range args {
		if strings.ContainsAny(a, "^$*? ") {
			a = "'" + a + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

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

package control

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const benchOut = `goos: linux
BenchmarkCNIAddDel-2   	       1	1234567 ns/op	         0.5400 add-p50-ratio	         0.2500 del-p50-ratio	        12.50 romana-add-p50-ms
BenchmarkPolicyEnforcementAgents/policies=100-2         	       3	         0 ns/op	       180.0 p99-ms	        70.00 p50-ms
BenchmarkPolicyEnforcementAgents/policies=10000-2       	       3	         0 ns/op	       1080 p99-ms
--- BENCH: BenchmarkCNIAddDel-2
PASS
`

func TestParseBench(t *testing.T) {
	m := ParseBench(benchOut, "")
	if m[""]["add-p50-ratio"] != 0.54 || m[""]["romana-add-p50-ms"] != 12.5 {
		t.Fatalf("top-level metrics: %v", m[""])
	}
	if m["policies=100"]["p99-ms"] != 180 || m["policies=10000"]["p99-ms"] != 1080 {
		t.Fatalf("sub-benchmark metrics: %v", m)
	}
	if len(m) != 3 {
		t.Fatalf("want 3 result lines, got %v", m)
	}
}

func TestGoals(t *testing.T) {
	m := ParseBench(benchOut, "")
	runs := []Run{{Name: "cni", Metrics: map[string]map[string]float64{"": m[""]}},
		{Name: "enforce", Metrics: map[string]map[string]float64{"policies=100": m["policies=100"], "policies=10000": m["policies=10000"]}}}
	g := Goals(runs)
	if len(g) != 3 || !g[0].Met || !g[1].Met || g[2].Met || g[2].Missing {
		t.Fatalf("goals: %+v", g)
	}
	if !strings.Contains(g[2].String(), "missed") {
		t.Fatalf("a miss must say so: %s", g[2])
	}
	g = Goals(runs[:1])
	if !g[1].Missing || g[1].Met {
		t.Fatalf("a goal not measured must read missing: %+v", g[1])
	}
}

func TestWriteKeepsOtherSections(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "b.md")
	if err := os.WriteFile(doc, []byte("## A\nkept\n"+BeginMarker+"\nold\n"+EndMarker+"\n## B\nkept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := Results{Runs: []Run{{Name: "cni", Command: "go test", Metrics: ParseBench(benchOut, "")}, {Name: "alloc", Error: "exit status 1: boom"}}}
	r.Goals = Goals(r.Runs)
	if err := Write(dir, doc, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	for _, want := range []string{"## A\nkept", "## B\nkept", "0.54 add-p50-ratio", "**failed**: exit status 1: boom"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("doc lacks %q:\n%s", want, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, JSONFile)); err != nil {
		t.Fatal(err)
	}
}

func TestSelected(t *testing.T) {
	names := func(bs []Bench) (out []string) {
		for _, b := range bs {
			out = append(out, b.Name)
		}
		return out
	}
	full, quick := names(Selected(false)), names(Selected(true))
	if len(full) != len(Benches) || !slices.Contains(full, "endpoints") {
		t.Fatalf("a full run takes every benchmark: %v", full)
	}
	if slices.Contains(quick, "endpoints") || !slices.Contains(quick, "enforce") {
		t.Fatalf("a QUICK run leaves out the endpoints benchmark only: %v", quick)
	}
}

func TestMergeKeepsOtherRuns(t *testing.T) {
	m := ParseBench(benchOut, "")
	old := Results{Command: "make bench", LoadBefore: "0.45 0.30 0.20",
		Runs: []Run{{Name: "cni", Metrics: map[string]map[string]float64{"": m[""]}},
			{Name: "enforce", Metrics: map[string]map[string]float64{"policies=100": m["policies=100"]}}}}
	old.Goals = Goals(old.Runs)
	ep := Run{Name: "endpoints", Command: "go test", LoadBefore: "9.0 9.0 9.0", Metrics: map[string]map[string]float64{"endpoints=10000": {"rss-MiB@10000": 225}}}
	got := Merge(old, "romana-bench control -only endpoints", []Run{ep})
	if got.Command != "make bench" || got.LoadBefore != "0.45 0.30 0.20" || len(got.Runs) != 3 {
		t.Fatalf("merge changed the earlier run: %+v", got)
	}
	if got.Runs[2].Name != "endpoints" || got.Runs[2].Alone == "" || old.Runs[1].Alone != "" {
		t.Fatalf("merged run: %+v (old %+v)", got.Runs, old.Runs)
	}
	again := Merge(got, "again", []Run{{Name: "cni", Error: "boom"}})
	if len(again.Runs) != 3 || again.Runs[0].Error != "boom" || again.Runs[0].Alone != "again" || !again.Goals[0].Missing {
		t.Fatalf("a run of the same name replaces the old one and the goals are read again: %+v", again)
	}
	var b strings.Builder
	b.WriteString(Render(got))
	if !strings.Contains(b.String(), "`endpoints` ran later on its own") || !strings.Contains(b.String(), "225 rss-MiB@10000") {
		t.Fatalf("render of a merged run:\n%s", b.String())
	}
}

func TestNamed(t *testing.T) {
	bs, err := Named([]string{"endpoints", "cni"})
	if err != nil || len(bs) != 2 || bs[0].Name != "cni" || bs[1].Name != "endpoints" {
		t.Fatalf("Named: %v %v", bs, err)
	}
	if _, err := Named([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("an unknown name must be an error naming it: %v", err)
	}
}

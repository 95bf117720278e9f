package dataplane

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestOrderAlternates(t *testing.T) {
	got := Order([]string{"a", "b", "c"}, 4)
	want := [][]string{{"a", "b", "c"}, {"c", "b", "a"}, {"a", "b", "c"}, {"c", "b", "a"}}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("round %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestSummarizeRatiosToRoutedOfSamePlacement(t *testing.T) {
	s := []Sample{
		{Routed, Cross, Gbit1, 0, 10}, {Routed, Cross, Gbit1, 1, 12}, {Routed, Cross, Gbit1, 2, 100},
		{Romana, Cross, Gbit1, 0, 9}, {Romana, Cross, Gbit1, 1, 11}, {Romana, Cross, Gbit1, 2, 13},
		{Routed, Same, Gbit1, 0, 40}, {Romana, Same, Gbit1, 0, 20},
		{VXLAN, Cross, Gbit1, 0, 8},
	}
	cells := Summarize(s, []string{Routed, Romana, VXLAN})
	c, ok := Find(cells, Romana, Cross, Gbit1)
	if !ok || c.Median != 11 || c.Ratio != 11.0/12 { // routed median 12 (10, 12, 100), Romana 11
		t.Fatalf("romana cross: %+v", c)
	}
	if c, _ := Find(cells, Romana, Same, Gbit1); c.Ratio != 0.5 {
		t.Fatalf("same-host ratio must use the same-host routed median: %+v", c)
	}
	if _, ok := Find(cells, VXLAN, Same, Gbit1); ok {
		t.Fatal("a cell with no samples must not exist")
	}
	g := Goals(cells)
	if g[0].Missing || g[0].Measured != 11.0/12 || g[0].Met {
		t.Fatalf("goal against routed: %+v", g[0])
	}
	if g[1].Missing || g[1].Measured != 11.0/8 || !g[1].Met {
		t.Fatalf("goal against vxlan: %+v", g[1])
	}
	if g := Goals(Summarize(s[:6], []string{Routed, Romana})); !g[1].Missing || g[1].Met {
		t.Fatalf("a goal whose condition did not run must read missing: %+v", g[1])
	}
}

func TestParseIperfAndSockperf(t *testing.T) {
	g, err := parseIperf([]byte(`{"end":{"sum_received":{"bits_per_second":12500000000}}}`))
	if err != nil || g != 12.5 {
		t.Fatalf("iperf: %v %v", g, err)
	}
	if _, err := parseIperf([]byte(`{"error":"unable to connect"}`)); err == nil {
		t.Fatal("iperf error not reported")
	}
	out := "sockperf: ---> percentile 99.000 =    22.999\nsockperf: ---> percentile 90.000 =    2.840\nsockperf: ---> percentile 50.000 =    14.666\n"
	p50, p99, err := parseSockperf(out)
	if err != nil || p50 != 14.666 || p99 != 22.999 {
		t.Fatalf("sockperf: %v %v %v", p50, p99, err)
	}
	if _, _, err := parseSockperf("sockperf: no server"); err == nil {
		t.Fatal("sockperf without percentiles not reported")
	}
}

func TestUpdateDocKeepsOtherSections(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "b.md")
	before := "# B\n\n## Other\nkept\n\n" + BeginMarker + "\nold\n" + EndMarker + "\n\n## After\nkept too\n"
	if err := os.WriteFile(doc, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	r := Results{Conditions: []string{Routed, Romana}, Placements: []string{Cross}, Rounds: 2,
		Cells: Summarize([]Sample{{Routed, Cross, Gbit1, 0, 10}, {Romana, Cross, Gbit1, 0, 9.5}}, []string{Routed, Romana})}
	r.Goals = Goals(r.Cells)
	if err := UpdateDoc(doc, filepath.Join(dir, "bench"), r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	s := string(b)
	for _, want := range []string{"## Other\nkept", "## After\nkept too", "| Romana, 1,000 tenants + 1,000 policies | 0.95 |", "goal ≥ 0.97: **missed**", "bench/" + PlotCross} {
		if !strings.Contains(s, want) {
			t.Errorf("doc lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "\nold\n") {
		t.Error("old block kept")
	}
	if err := UpdateDoc(filepath.Join(dir, "b.md"), dir, r); err != nil {
		t.Fatal("second update:", err)
	}
	if err := os.WriteFile(doc, []byte("# no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := UpdateDoc(doc, dir, r); err == nil {
		t.Fatal("a doc without markers must be refused")
	}
}

func TestWritePlots(t *testing.T) {
	dir := t.TempDir()
	conds := []string{Routed, Romana, PTP}
	var s []Sample
	for i, c := range conds {
		for _, p := range []string{Cross, Same} {
			for _, m := range Metrics {
				s = append(s, Sample{c, p, m, 0, float64(10 + i)})
			}
		}
	}
	r := Results{Conditions: conds, Cells: Summarize(s, conds)}
	if err := WritePlots(dir, r); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{PlotCross, PlotSame} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() < 1000 {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

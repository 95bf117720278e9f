package scale

import (
	"strings"
	"testing"
)

func TestNum(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567", -1000: "-1,000"} {
		if got := num(n); got != want {
			t.Errorf("num(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestSpliceIdempotent: regenerating the block from the same results
// gives the same doc, whatever the block held before, and leaves the text
// around the markers alone.
func TestSpliceIdempotent(t *testing.T) {
	snap, err := Snapshot(tiny)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := Romana(snap)
	if err != nil {
		t.Fatal(err)
	}
	pt := Point{Cluster: tiny, Romana: ro, PerEndpoint: PerEndpoint(snap, ObservedHost, ObservedRack),
		PerBlock: PerBlock(snap, ObservedHost, ObservedRack, BlockSize), ComputeMS: 1.5, ComputeRunsMS: []float64{1.5, 2, 1}}
	r := Results{Command: "go run ./bench/romana-bench scale", Machine: Machine{Cores: 2, Go: "go1.26.8", OSArch: "linux/amd64", LoadBefore: "0.1 0.2 0.3", LoadAfter: "0.4 0.5 0.6"},
		Plan: "10.0.0.0/8", Racks: 2, Hosts: 4, BlockSize: BlockSize, Runs: 3,
		Curves: []Curve{{Name: "endpoints", Varies: "endpoints", Points: []Point{pt}}, {Name: "tenants", Varies: "tenants", Points: []Point{pt}},
			{Name: "policies", Varies: "policies", Points: []Point{pt}}}}
	doc := "# B\n\nbefore\n\n" + BeginMarker + "\nold stuff\n" + EndMarker + "\n\nafter\n"
	block := Render(r, "bench")
	once, err := Splice(doc, block)
	if err != nil {
		t.Fatal(err)
	}
	twice, err := Splice(once, Render(r, "bench"))
	if err != nil {
		t.Fatal(err)
	}
	if once != twice {
		t.Errorf("not idempotent:\n%s\n----\n%s", once, twice)
	}
	if !strings.HasPrefix(once, "# B\n\nbefore\n\n"+BeginMarker+"\n") || !strings.HasSuffix(once, "\n"+EndMarker+"\n\nafter\n") || strings.Contains(once, "old stuff") {
		t.Errorf("splice changed the text around the block or kept the old block:\n%s", once)
	}
	for _, want := range []string{"    go run ./bench/romana-bench scale", "load average (1, 5, 15 min) 0.1 0.2 0.3 before, 0.4 0.5 0.6 after",
		"](bench/scale-endpoints.png)", "](bench/scale-routes.png)", "1.5, 2.0, 1.0 ms"} {
		if !strings.Contains(once, want) {
			t.Errorf("block lacks %q:\n%s", want, once)
		}
	}
	for _, bad := range []string{"no markers", BeginMarker + "\n" + BeginMarker + "\n" + EndMarker, EndMarker + "\n" + BeginMarker} {
		if _, err := Splice(bad, block); err == nil {
			t.Errorf("Splice(%q): no error", bad)
		}
	}
}

// Package dataplane measures Romana's dataplane beside real peers on the
// same simulated hosts (issue 14, item 1): the no-rule routed path (the
// limit), Romana with 1,000 tenants and 1,000 policies, the real flannel
// daemon in its vxlan and host-gw backends, a kernel VXLAN overlay set up by
// hand and the reference ptp CNI plugin. Each condition is measured cross-
// host and same-host with iperf3 (1 and 8 streams), sockperf ping-pong
// (p50, p99) and sequential TCP connects per second; conditions alternate
// A-B-...-B-A within one run and every figure is reported as a ratio to the
// routed path measured in the same run. Absolute numbers are printed, never
// judged.
//
// This file is the pure part: results, medians, ratios and the goals.
package dataplane

import (
	"fmt"
	"slices"
)

// Conditions, in the order a round measures them (the next round runs
// them backwards).
const (
	Routed       = "routed"        // no rules, plain routes: the limit
	Romana       = "romana"        // Romana's table, 1,000 tenants, 1,000 policies
	FlannelVXLAN = "flannel-vxlan" // flanneld, vxlan backend, bridge CNI
	FlannelHGW   = "flannel-hostgw"
	VXLAN        = "vxlan" // kernel VXLAN by hand, MTU 1450
	PTP          = "ptp"   // reference ptp + host-local, routes by hand
)

// Placements: the two endpoints on different hosts or on the same one.
const (
	Cross = "cross-host"
	Same  = "same-host"
)

// Metrics measured for every condition and placement.
const (
	Gbit1    = "iperf3 1 stream Gbit/s"
	Gbit8    = "iperf3 8 streams Gbit/s"
	LatP50   = "sockperf p50 µs"
	LatP99   = "sockperf p99 µs"
	Connects = "TCP connects/s"
)

// Metrics lists the metrics in report order.
var Metrics = []string{Gbit1, Gbit8, LatP50, LatP99, Connects}

// HigherIsBetter tells, for a metric, which way is better.
func HigherIsBetter(metric string) bool { return metric != LatP50 && metric != LatP99 }

// Results is one run of the dataplane part.
type Results struct {
	Command    string     `json:"command"`
	Machine    Machine    `json:"machine"`
	Quick      bool       `json:"quick"`
	Seconds    float64    `json:"seconds"`
	Rounds     int        `json:"rounds"`      // each condition measured this many times per metric
	RunSeconds int        `json:"run_seconds"` // length of one iperf3 or sockperf run
	Tenants    int        `json:"tenants"`
	Policies   int        `json:"policies"`
	Versions   Versions   `json:"versions"`
	Conditions []string   `json:"conditions"`
	Placements []string   `json:"placements"`
	Notes      []string   `json:"notes,omitempty"`
	Cells      []Cell     `json:"cells"`
	Skipped    []string   `json:"skipped,omitempty"` // conditions that could not run, with why
	Order      []string   `json:"order"`             // the order conditions were measured in
	Samples    []Sample   `json:"samples,omitempty"`
	Goals      []GoalRead `json:"goals"`
}

// Machine is what the figures were taken on.
type Machine struct {
	Cores      int    `json:"cores"`
	CPU        string `json:"cpu"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
}

// Versions of the tools and peers measured.
type Versions struct {
	Flannel  string `json:"flannel"`
	Etcd     string `json:"etcd"`
	Iperf3   string `json:"iperf3"`
	Sockperf string `json:"sockperf"`
	CNI      string `json:"cni_plugins"`
}

// Sample is one measurement.
type Sample struct {
	Condition string  `json:"condition"`
	Placement string  `json:"placement"`
	Metric    string  `json:"metric"`
	Round     int     `json:"round"`
	Value     float64 `json:"value"`
}

// Cell is the median of one condition, placement and metric, and its
// ratio to the routed path's median (1 for the routed path itself; 0 when
// either is missing).
type Cell struct {
	Condition string    `json:"condition"`
	Placement string    `json:"placement"`
	Metric    string    `json:"metric"`
	Median    float64   `json:"median"`
	Values    []float64 `json:"values"`
	Ratio     float64   `json:"ratio_to_routed"`
}

// Summarize turns samples into cells, in condition, placement and metric
// order.
func Summarize(samples []Sample, conditions []string) []Cell {
	var cells []Cell
	vals := func(c, p, m string) []float64 {
		var v []float64
		for _, s := range samples {
			if s.Condition == c && s.Placement == p && s.Metric == m {
				v = append(v, s.Value)
			}
		}
		return v
	}
	for _, c := range conditions {
		for _, p := range []string{Cross, Same} {
			for _, m := range Metrics {
				v := vals(c, p, m)
				if len(v) == 0 {
					continue
				}
				cell := Cell{Condition: c, Placement: p, Metric: m, Values: v, Median: Median(v)}
				if base := Median(vals(Routed, p, m)); base > 0 && cell.Median > 0 {
					cell.Ratio = cell.Median / base
				}
				cells = append(cells, cell)
			}
		}
	}
	return cells
}

// Find returns the cell, or false.
func Find(cells []Cell, condition, placement, metric string) (Cell, bool) {
	for _, c := range cells {
		if c.Condition == condition && c.Placement == placement && c.Metric == metric {
			return c, true
		}
	}
	return Cell{}, false
}

// Median of xs (0 for none).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// GoalRead is one of issue 14's dataplane goals against this run.
type GoalRead struct {
	Goal     string  `json:"goal"`
	Want     float64 `json:"want"` // the ratio aimed at (at least)
	Measured float64 `json:"measured"`
	Met      bool    `json:"met"`
	Missing  bool    `json:"missing"` // a condition it needs did not run
}

// Goals reads the dataplane goals: Romana with rules at least 0.97× the
// routed path and at least 1.13× the VXLAN overlay in single-stream
// cross-host throughput.
func Goals(cells []Cell) []GoalRead {
	get := func(c string) float64 {
		cell, _ := Find(cells, c, Cross, Gbit1)
		return cell.Median
	}
	read := func(goal string, want, a, b float64) GoalRead {
		g := GoalRead{Goal: goal, Want: want}
		if a == 0 || b == 0 {
			g.Missing = true
			return g
		}
		g.Measured = a / b
		g.Met = g.Measured >= want
		return g
	}
	r := get(Romana)
	return []GoalRead{
		read("Romana (1,000 policies) ÷ no-rule routed, 1-stream cross-host throughput", 0.97, r, get(Routed)),
		read("Romana (1,000 policies) ÷ kernel VXLAN overlay, 1-stream cross-host throughput", 1.13, r, get(VXLAN)),
	}
}

// Order returns the measurement order for rounds: forward, then backward,
// and so on (A-B-C-C-B-A), so that slow drift of the machine hits every
// condition alike.
func Order(conditions []string, rounds int) [][]string {
	var out [][]string
	for i := range rounds {
		o := slices.Clone(conditions)
		if i%2 == 1 {
			slices.Reverse(o)
		}
		out = append(out, o)
	}
	return out
}

// String renders a goal reading for the terminal and the doc.
func (g GoalRead) String() string {
	switch {
	case g.Missing:
		return fmt.Sprintf("%s: not measured (a condition it needs did not run); goal ≥ %.2f", g.Goal, g.Want)
	case g.Met:
		return fmt.Sprintf("%s: %.2f (goal ≥ %.2f: met)", g.Goal, g.Measured, g.Want)
	}
	return fmt.Sprintf("%s: %.2f (goal ≥ %.2f: **missed**)", g.Goal, g.Measured, g.Want)
}

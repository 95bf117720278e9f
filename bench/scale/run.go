package scale

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/romana/romana/hoststate"
)

// BlockSize is the per-block scheme's block: 64 addresses, Calico's
// IPAM default (a /26).
const BlockSize = 64

// Racks and HostsPerRack size every case's cluster: 32 hosts.
const (
	Racks        = 4
	HostsPerRack = 8
)

// Sweep is one curve: the clusters measured, in order, and the quantity
// that varies along it.
type Sweep struct {
	Name   string    `json:"name"`
	Varies string    `json:"varies"` // "endpoints", "tenants" or "policies"
	Points []Cluster `json:"-"`
}

// Sweeps are the three curves: endpoints with 1,000 tenants, tenants with
// 10,000 endpoints (no policies in either), and policies with 1,000
// tenants and 10,000 endpoints.
func Sweeps() []Sweep {
	c := func(t, e, p int) Cluster {
		return Cluster{Racks: Racks, HostsPerRack: HostsPerRack, Tenants: t, Endpoints: e, Policies: p}
	}
	var es, ts, ps []Cluster
	for _, e := range []int{1000, 3000, 10000, 30000, 100000} {
		es = append(es, c(1000, e, 0))
	}
	for _, t := range []int{100, 300, 1000, 3000, 10000} {
		ts = append(ts, c(t, 10000, 0))
	}
	for _, p := range []int{10, 100, 1000, 10000} {
		ps = append(ps, c(1000, 10000, p))
	}
	return []Sweep{{"endpoints", "endpoints", es}, {"tenants", "tenants", ts}, {"policies", "policies", ps}}
}

// Point is one measured cluster.
type Point struct {
	Cluster     Cluster `json:"cluster"`
	Romana      Counts  `json:"romana"`
	PerEndpoint Counts  `json:"perEndpoint"`
	PerBlock    Counts  `json:"perBlock"`
	// ComputeMS is the median wall time of hoststate.Compute for the
	// observed host (routes and the whole ruleset, policies compiled),
	// over ComputeRunsMS.
	ComputeMS     float64   `json:"computeMs"`
	ComputeRunsMS []float64 `json:"computeRunsMs"`
}

// Curve is a measured sweep.
type Curve struct {
	Name   string  `json:"name"`
	Varies string  `json:"varies"`
	Points []Point `json:"points"`
}

// Measure builds the cluster's snapshot, counts the three schemes and
// times hoststate.Compute runs times (at least once).
func Measure(c Cluster, runs int) (Point, error) {
	snap, err := Snapshot(c)
	if err != nil {
		return Point{}, err
	}
	pt := Point{Cluster: c, PerEndpoint: PerEndpoint(snap, ObservedHost, ObservedRack), PerBlock: PerBlock(snap, ObservedHost, ObservedRack, BlockSize)}
	if pt.Romana, err = Romana(snap); err != nil {
		return Point{}, fmt.Errorf("cluster %+v: %w", c, err)
	}
	for range max(runs, 1) {
		start := time.Now()
		if _, err := hoststate.Compute(snap, ObservedHost, hoststate.Options{Mode: hoststate.ModeFlat}); err != nil {
			return Point{}, err
		}
		pt.ComputeRunsMS = append(pt.ComputeRunsMS, float64(time.Since(start).Microseconds())/1000)
	}
	pt.ComputeMS = Median(pt.ComputeRunsMS)
	return pt, nil
}

// Median of xs (the mean of the middle two for an even count); 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Run measures every sweep, calling progress before each case with its
// 1-based position, the total and a description. It stops between cases
// when ctx is done.
func Run(ctx context.Context, sweeps []Sweep, runs int, progress func(i, n int, what string)) ([]Curve, error) {
	n := 0
	for _, s := range sweeps {
		n += len(s.Points)
	}
	i := 0
	var out []Curve
	for _, s := range sweeps {
		cv := Curve{Name: s.Name, Varies: s.Varies}
		for _, c := range s.Points {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			i++
			progress(i, n, fmt.Sprintf("%s: tenants=%d endpoints=%d policies=%d", s.Name, c.Tenants, c.Endpoints, c.Policies))
			pt, err := Measure(c, runs)
			if err != nil {
				return nil, err
			}
			cv.Points = append(cv.Points, pt)
		}
		out = append(out, cv)
	}
	return out, nil
}

package health

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// at is t0 plus s seconds: the fake clock.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// report is a converged agent's report at revision rev, made at agent
// time `made` (its clock runs an hour ahead of romanad's: skew must not
// matter), its last sync 1 s before, every 5 s (resync 10 s).
func report(rev int64, received float64) *Report {
	made := at(received).Add(time.Hour)
	return &Report{Received: at(received), Status: api.AgentStatus{Host: "h1", Version: "dev", Time: made,
		Revision: rev, LastSync: made.Add(-time.Second), ResyncSeconds: 10, ReportSeconds: 5}}
}

func with(r *Report, f func(s *api.AgentStatus)) *Report {
	f(&r.Status)
	return r
}

func TestJudge(t *testing.T) {
	// The store: revision 10 since before romanad started (t0), 20 from
	// t0+100s, 30 from t0+200s.
	var revs Revisions
	revs.Observe(10, at(0))
	revs.Observe(20, at(100))
	revs.Observe(30, at(200))
	up := at(0)
	for _, tc := range []struct {
		name    string
		now     float64
		rep     *Report
		state   string
		reasons []string
	}{
		{"never reported", 3, nil, api.StateUnreachable, []string{"no report since romanad started 3s ago"}},
		{"never reported, long", 300, nil, api.StateUnreachable, []string{"no report since romanad started 5m0s ago"}},
		{"converged", 50, report(10, 49), api.StateConverged, nil},
		// Stale after 2×5 s + max(2 s, 2.5 s) = 12.5 s of silence.
		{"silent 12.5s: still converged", 61.5, report(10, 49), api.StateConverged, nil},
		{"silent 12.6s: unreachable", 61.6, report(10, 49), api.StateUnreachable, []string{"no report for 13s (the agent reports every 5s)"}},
		{"unreachable hides old problems", 100, with(report(10, 49), func(s *api.AgentStatus) { s.Problems = []string{"x"} }),
			api.StateUnreachable, []string{"no report for 51s (the agent reports every 5s)"}},
		{"fast reporter, stale after 2×0.5+2 s", 53.1, with(report(10, 50), func(s *api.AgentStatus) { s.ReportSeconds = 0.5 }),
			api.StateUnreachable, []string{"no report for 3.1s (the agent reports every 500ms)"}},
		// Revision 20 appeared at 100: a report at 104.9 without it is in
		// the grace, one at 105.1 is behind.
		{"new revision within grace", 105, report(10, 104.9), api.StateConverged, nil},
		{"behind after grace", 106, report(10, 105.1), api.StateBehind, []string{"at revision 10; the store had revision 20 for over 5s"}},
		{"behind two revisions", 206, report(10, 205.1), api.StateBehind, []string{"at revision 10; the store had revision 30 for over 5s"}},
		{"behind, not yet at the newest", 206, report(20, 204), api.StateConverged, nil},
		{"caught up", 206, report(30, 205), api.StateConverged, nil},
		{"ahead of what romanad saw (snapshot)", 50, report(12, 49), api.StateConverged, nil},
		{"behind and failing", 106, with(report(0, 105.1), func(s *api.AgentStatus) {
			s.Error = "no reconciliation yet (waiting for romanad's initial snapshot)"
		}), api.StateBehind, []string{"at revision 0; the store had revision 20 for over 5s", "no reconciliation yet (waiting for romanad's initial snapshot)"}},
		{"failed reconcile", 50, with(report(10, 49), func(s *api.AgentStatus) { s.Error = "routes: permission denied" }),
			api.StateProblems, []string{"last reconciliation failed: routes: permission denied"}},
		{"problems, conflicts, refused, bgp", 50, with(report(10, 49), func(s *api.AgentStatus) {
			s.Problems = []string{"address a: unknown tenant t", "address b: unknown tenant t"}
			s.RouteConflicts = []string{"10.1.0.0/16 via 192.0.2.2 held by proto static"}
			s.RoutesRefused = []string{"10.2.0.0/16 via 127.0.0.1: loopback next hop"}
			s.BGP = []api.BGPSession{{Peer: netip.MustParseAddr("192.0.2.1"), ASN: 65001, State: "established", Established: true},
				{Peer: netip.MustParseAddr("192.0.2.9"), ASN: 65009, State: "active"}}
		}), api.StateProblems, []string{
			"2 problems, the first: address a: unknown tenant t",
			"route conflict: 10.1.0.0/16 via 192.0.2.2 held by proto static",
			"route refused: 10.2.0.0/16 via 127.0.0.1: loopback next hop",
			"bgp session with 192.0.2.9 (as 65009) is active",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Judge(at(tc.now), "h1", tc.rep, &revs, up, Options{})
			if h.State != tc.state || !slices.Equal(h.Reasons, tc.reasons) {
				t.Errorf("got %s %q\nwant %s %q", h.State, h.Reasons, tc.state, tc.reasons)
			}
			if tc.rep != nil {
				// Last sync 1 s before the report, on romanad's clock
				// whatever the agent's.
				if want := tc.rep.Received.Add(-time.Second); !h.LastSync.Equal(want) || !h.LastReport.Equal(tc.rep.Received) {
					t.Errorf("lastSync %s lastReport %s, want %s %s", h.LastSync, h.LastReport, want, tc.rep.Received)
				}
				if h.Revision != tc.rep.Status.Revision || h.Report == nil {
					t.Errorf("revision %d report %v", h.Revision, h.Report)
				}
			}
		})
	}
}

func TestStaleWithinOneResync(t *testing.T) {
	// An agent reports every resync/2; stopped right after a report, it
	// is unreachable within one resync plus the margin.
	o := Options{}
	for _, resync := range []time.Duration{300 * time.Millisecond, time.Second, 10 * time.Second, time.Minute} {
		every := resync / 2
		if got, limit := o.StaleAfter(every), resync+max(DefaultMinMargin, every/2); got > limit {
			t.Errorf("resync %s: stale after %s, more than %s", resync, got, limit)
		}
	}
}

func TestRevisions(t *testing.T) {
	var r Revisions
	if r.Current() != 0 || r.At(t0) != 0 {
		t.Fatal("empty revisions are not 0")
	}
	r.Observe(5, at(10))
	r.Observe(4, at(11)) // older: ignored
	r.Observe(5, at(12)) // same: ignored (keeps 10 as its time)
	r.Observe(9, at(8))  // time went back: taken as at(10)
	for _, c := range []struct {
		t    float64
		want int64
	}{{9.9, 0}, {10, 9}, {100, 9}} {
		if got := r.At(at(c.t)); got != c.want {
			t.Errorf("At(%v) = %d, want %d", c.t, got, c.want)
		}
	}
	// Beyond MaxMarks the oldest go; At before the oldest kept answers
	// the newest dropped.
	var b Revisions
	for i := range MaxMarks + 10 {
		b.Observe(int64(i+1), at(float64(i)))
	}
	if len(b.marks) != MaxMarks || b.floor != 10 || b.At(at(-1)) != 10 || b.At(at(10)) != 11 || b.Current() != MaxMarks+10 {
		t.Errorf("marks %d floor %d At(-1) %d At(10) %d current %d", len(b.marks), b.floor, b.At(at(-1)), b.At(at(10)), b.Current())
	}
}

func TestSummary(t *testing.T) {
	hs := []api.HostStatus{{State: api.StateUnreachable}, {State: api.StateConverged}, {State: api.StateConverged}, {State: api.StateBehind}}
	if got := Summary(hs); got != "2 converged, 1 behind, 1 unreachable" {
		t.Errorf("Summary = %q", got)
	}
	if got := Summary(nil); got != "no hosts" {
		t.Errorf("Summary(nil) = %q", got)
	}
}

func TestTruncateStatus(t *testing.T) {
	var l []string
	for i := range 120 {
		l = append(l, fmt.Sprintf("problem %d %s", i, strings.Repeat("é", 200)))
	}
	out := api.TruncateStatus(l)
	if len(out) != api.MaxStatusItems || out[len(out)-1] != "... and 71 more" {
		t.Fatalf("%d entries, last %q", len(out), out[len(out)-1])
	}
	s := api.AgentStatus{Time: t0, Version: "dev", ResyncSeconds: 10, ReportSeconds: 5, Problems: out, Error: api.TruncateText(strings.Repeat("x", 1000))}
	if err := s.Screen(); err != nil {
		t.Errorf("a truncated report is refused: %v", err)
	}
}

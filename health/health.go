// Package health judges each host's agent from its last status report,
// with romanad's clock and the store's revision over time: converged,
// behind, problems or unreachable (api.HostStatus). It is pure: the caller
// passes the time and the revisions it saw; nothing here reads a clock.
package health

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/romana/romana/api"
)

// Defaults of Options.
const (
	DefaultGrace     = 5 * time.Second
	DefaultMinMargin = 2 * time.Second
	// DefaultReportEvery is the report interval assumed for a host whose
	// agent never reported (the agent's default: half its 10 s resync).
	DefaultReportEvery = 5 * time.Second
)

// Options tunes the judgement; zero values take the defaults.
type Options struct {
	// Grace is how long the store may hold a revision that an agent's
	// report does not have before the agent is behind (following and
	// applying a change takes milliseconds; the grace covers a loaded
	// host and the report's way to romanad).
	Grace time.Duration
	// MinMargin is the least margin added to twice an agent's report
	// interval before it is unreachable; the margin is the larger of it
	// and half the interval.
	MinMargin time.Duration
}

func (o Options) withDefaults() Options {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.MinMargin <= 0 {
		o.MinMargin = DefaultMinMargin
	}
	return o
}

// StaleAfter is how long an agent that reports every `every` may stay
// silent before it is unreachable: two intervals plus the margin. The
// agent reports every half resync interval, so a stopped agent is
// unreachable within one resync interval plus the margin.
func (o Options) StaleAfter(every time.Duration) time.Duration {
	o = o.withDefaults()
	return 2*every + max(o.MinMargin, every/2)
}

// Report is an agent's report with the time romanad received it
// (romanad's clock).
type Report struct {
	Status   api.AgentStatus
	Received time.Time
}

// Every is the report's interval.
func (r Report) Every() time.Duration { return seconds(r.Status.ReportSeconds) }

// LastSync is the agent's last successful reconciliation on romanad's
// clock: the report's arrival minus how long before the report it ended
// (a difference of two times of the agent's clock, so clock skew between
// the host and romanad does not matter). Zero when there was none.
func (r Report) LastSync() time.Time {
	s := r.Status
	if s.LastSync.IsZero() || s.Time.IsZero() {
		return time.Time{}
	}
	return r.Received.Add(-max(0, s.Time.Sub(s.LastSync)))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Judge judges one host's agent at now. rep is its last report (nil: none
// since romanad started, at up); revs is the store's revision over time.
//
// In order: unreachable when the last report is older than StaleAfter its
// interval (or there is none); behind when the report lacks a revision the
// store had held for Grace when the report arrived; problems when the
// agent's last reconciliation failed, left objects out (problems, route
// conflicts, refused routes) or a BGP session is not established;
// converged otherwise. Reasons list every finding of the state.
func Judge(now time.Time, host string, rep *Report, revs *Revisions, up time.Time, o Options) api.HostStatus {
	o = o.withDefaults()
	h := api.HostStatus{Host: host}
	if rep == nil {
		h.State = api.StateUnreachable
		h.Reasons = []string{fmt.Sprintf("no report since romanad started %s ago", round(now.Sub(up)))}
		return h
	}
	s := rep.Status
	h.Revision, h.LastReport, h.LastSync = s.Revision, rep.Received, rep.LastSync()
	h.Report = &s
	every := rep.Every()
	if silent := now.Sub(rep.Received); silent > o.StaleAfter(every) {
		h.State = api.StateUnreachable
		h.Reasons = []string{fmt.Sprintf("no report for %s (the agent reports every %s)", round(silent), round(every))}
		return h
	}
	if want := revs.At(rep.Received.Add(-o.Grace)); s.Revision < want {
		h.State = api.StateBehind
		h.Reasons = append(h.Reasons, fmt.Sprintf("at revision %d; the store had revision %d for over %s", s.Revision, want, o.Grace))
		if s.Error != "" {
			h.Reasons = append(h.Reasons, s.Error)
		}
		return h
	}
	if s.Error != "" {
		h.Reasons = append(h.Reasons, "last reconciliation failed: "+s.Error)
	}
	h.Reasons = append(h.Reasons, listed(s.Problems, "problem", "problems")...)
	h.Reasons = append(h.Reasons, listed(s.RouteConflicts, "route conflict", "route conflicts")...)
	h.Reasons = append(h.Reasons, listed(s.RoutesRefused, "route refused", "routes refused")...)
	for _, b := range s.BGP {
		if !b.Established {
			h.Reasons = append(h.Reasons, fmt.Sprintf("bgp session with %s (as %d) is %s", b.Peer, b.ASN, b.State))
		}
	}
	if len(h.Reasons) > 0 {
		h.State = api.StateProblems
		return h
	}
	h.State = api.StateConverged
	return h
}

// listed is one reason for a list: its count and first entry.
func listed(l []string, one, many string) []string {
	switch len(l) {
	case 0:
		return nil
	case 1:
		return []string{one + ": " + l[0]}
	}
	return []string{fmt.Sprintf("%d %s, the first: %s", len(l), many, l[0])}
}

// round shortens a duration for a message: whole seconds from 10 s on,
// else milliseconds.
func round(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// Revisions is the store's newest object revision over time, as romanad
// saw it change: At answers which one was current at a past moment. The
// zero value is empty (revision 0). Not safe for concurrent use.
type Revisions struct {
	marks []mark // increasing in rev and in time
	// floor is the revision current before the first mark (the newest
	// mark dropped).
	floor int64
}

type mark struct {
	rev int64
	at  time.Time
}

// MaxMarks bounds the revisions kept: the oldest go first, and At of a
// time before the oldest kept answers the newest one dropped, which can
// only make an agent look less behind than it was.
const MaxMarks = 4096

// Observe records that rev was the store's newest revision at at. Older
// or equal revisions than the current one are ignored; at is taken as no
// earlier than the previous mark's.
func (r *Revisions) Observe(rev int64, at time.Time) {
	if rev <= r.Current() {
		return
	}
	if n := len(r.marks); n > 0 && at.Before(r.marks[n-1].at) {
		at = r.marks[n-1].at
	}
	if len(r.marks) == MaxMarks {
		r.floor = r.marks[0].rev
		r.marks = slices.Delete(r.marks, 0, 1)
	}
	r.marks = append(r.marks, mark{rev, at})
}

// Current is the newest revision observed.
func (r *Revisions) Current() int64 {
	if n := len(r.marks); n > 0 {
		return r.marks[n-1].rev
	}
	return r.floor
}

// At is the newest revision observed at or before t.
func (r *Revisions) At(t time.Time) int64 {
	i := sort.Search(len(r.marks), func(i int) bool { return r.marks[i].at.After(t) })
	if i == 0 {
		return r.floor
	}
	return r.marks[i-1].rev
}

// Summary counts hosts by state: "3 converged, 1 unreachable".
func Summary(hs []api.HostStatus) string {
	order := []string{api.StateConverged, api.StateBehind, api.StateProblems, api.StateUnreachable}
	n := map[string]int{}
	for _, h := range hs {
		n[h.State]++
	}
	var parts []string
	for _, st := range order {
		if n[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[st], st))
		}
	}
	if len(parts) == 0 {
		return "no hosts"
	}
	return strings.Join(parts, ", ")
}

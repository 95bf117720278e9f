package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server"
	"github.com/romana/romana/server/servertest"
)

// fakeClock is romanad's clock in a test: it moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestStatus: each host's agent may report only its own status; viewers
// read every host's, judged with romanad's (fake) clock and the store's
// revision.
func TestStatus(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	in := servertest.Start(t, servertest.WithServerConfig(func(c *server.Config) { c.Now = clock.Now }))
	ctx := context.Background()
	w := populate(t, in.Client) // hosts h0..h3
	h1 := in.ClientAs(t, pki.Host("h1"))
	viewer := in.ClientAs(t, pki.Viewer)

	status := func() api.Status {
		t.Helper()
		st, err := viewer.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Hosts) != len(w.hosts) {
			t.Fatalf("%d hosts in the status, want %d: %+v", len(st.Hosts), len(w.hosts), st)
		}
		return st
	}
	state := func(st api.Status, host string) api.HostStatus {
		for _, h := range st.Hosts {
			if h.Host == host {
				return h
			}
		}
		t.Fatalf("no host %s in %+v", host, st)
		return api.HostStatus{}
	}

	// Nobody reported: every host unreachable, saying why.
	st := status()
	for _, h := range st.Hosts {
		if h.State != api.StateUnreachable || len(h.Reasons) != 1 || !strings.HasPrefix(h.Reasons[0], "no report since romanad started") {
			t.Errorf("before any report: %+v", h)
		}
	}
	// The store's revision: what populate wrote, as romanad saw it.
	snap, err := in.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "romanad knows the store's revision", 10*time.Second, func() error {
		if got := status().StoreRevision; got == 0 || got > snap.Revision {
			return fmt.Errorf("store revision %d, want in 1..%d", got, snap.Revision)
		}
		return nil
	})

	report := func(rev int64, edit ...func(*api.AgentStatus)) error {
		now := time.Now()
		s := api.AgentStatus{Host: "h1", Version: "test", Time: now, LastSync: now.Add(-time.Second), Revision: rev,
			ResyncSeconds: 10, ReportSeconds: 5, Routes: 3, NFTRules: 40}
		for _, e := range edit {
			e(&s)
		}
		return h1.PutStatus(ctx, s)
	}
	if err := report(snap.Revision); err != nil {
		t.Fatal(err)
	}
	h := state(status(), "h1")
	if h.State != api.StateConverged || h.Revision != snap.Revision || h.Report == nil || h.Report.Version != "test" ||
		!h.LastReport.Equal(clock.Now()) || !h.LastSync.Equal(clock.Now().Add(-time.Second)) {
		t.Fatalf("after h1's report: %+v", h)
	}
	if h := state(status(), "h2"); h.State != api.StateUnreachable {
		t.Errorf("h2 without a report: %+v", h)
	}

	// host:h1 may not write h2's status, nor a viewer any.
	err = h1.PutStatus(ctx, api.AgentStatus{Host: "h2", Version: "test", Time: time.Now(), ResyncSeconds: 10, ReportSeconds: 5})
	if api.ReasonOf(err) != api.ReasonForbidden || !strings.Contains(err.Error(), "identity host:h1 may act only on host h1's objects") {
		t.Errorf("host:h1 writing h2's status: %v, want 403", err)
	}
	if err := viewer.PutStatus(ctx, api.AgentStatus{Host: "h1", Version: "test", Time: time.Now(), ResyncSeconds: 10, ReportSeconds: 5}); api.ReasonOf(err) != api.ReasonForbidden {
		t.Errorf("viewer writing h1's status: %v, want 403", err)
	}
	if h := state(status(), "h2"); h.State != api.StateUnreachable || h.Report != nil {
		t.Errorf("h2 after the refused report: %+v", h)
	}

	// Silent for 12.5 s (2 × 5 s + 2.5 s) at most: still converged; then
	// unreachable.
	clock.Add(12500 * time.Millisecond)
	if h := state(status(), "h1"); h.State != api.StateConverged {
		t.Errorf("silent 12.5s: %+v", h)
	}
	clock.Add(time.Millisecond)
	if h := state(status(), "h1"); h.State != api.StateUnreachable || h.Reasons[0] != "no report for 13s (the agent reports every 5s)" {
		t.Errorf("silent 12.501s: %+v", h)
	}

	// A change in the store: h1 still reports the old revision. Within
	// the grace (5 s) it is converged, then behind.
	if _, err := in.Client.AddTenant(ctx, api.Tenant{Name: "initech"}); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "romanad sees the new revision", 10*time.Second, func() error {
		if got := status().StoreRevision; got <= snap.Revision {
			return fmt.Errorf("store revision %d", got)
		}
		return nil
	})
	storeRev := status().StoreRevision
	if err := report(snap.Revision); err != nil {
		t.Fatal(err)
	}
	if h := state(status(), "h1"); h.State != api.StateConverged {
		t.Errorf("old revision within the grace: %+v", h)
	}
	clock.Add(5100 * time.Millisecond)
	if err := report(snap.Revision); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("at revision %d; the store had revision %d for over 5s", snap.Revision, storeRev)
	if h := state(status(), "h1"); h.State != api.StateBehind || h.Reasons[0] != want {
		t.Errorf("old revision after the grace: %+v, want %q", h, want)
	}
	// Caught up, with a problem.
	if err := report(storeRev, func(s *api.AgentStatus) { s.Problems = []string{"address x: unknown tenant nope"} }); err != nil {
		t.Fatal(err)
	}
	if h := state(status(), "h1"); h.State != api.StateProblems || h.Reasons[0] != "problem: address x: unknown tenant nope" {
		t.Errorf("with a problem: %+v", h)
	}
	if err := report(storeRev); err != nil {
		t.Fatal(err)
	}
	if st := status(); state(st, "h1").State != api.StateConverged || st.Converged() {
		t.Errorf("caught up: %+v (and the others unreachable)", st)
	}

	// Bad reports are refused and change nothing.
	for _, tc := range []struct {
		name   string
		client func() error
		status int
		msg    string
	}{
		{"too many problems", func() error {
			return report(storeRev, func(s *api.AgentStatus) { s.Problems = make([]string, api.MaxStatusItems+1) })
		}, http.StatusBadRequest, "problems: 51 entries, at most 50"},
		{"no interval", func() error { return report(storeRev, func(s *api.AgentStatus) { s.ReportSeconds = 0 }) },
			http.StatusBadRequest, "reportSeconds: 0 is not in (0, 86400]"},
		{"unknown host", func() error {
			return in.Client.PutStatus(ctx, api.AgentStatus{Host: "nope", Version: "x", Time: time.Now(), ResyncSeconds: 1, ReportSeconds: 1})
		}, http.StatusNotFound, "host nope not found"},
	} {
		err := tc.client()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != tc.status || !strings.Contains(ae.Message, tc.msg) {
			t.Errorf("%s: %v, want %d %q", tc.name, err, tc.status, tc.msg)
		}
	}
	if h := state(status(), "h1"); h.State != api.StateConverged || len(h.Report.Problems) != 0 {
		t.Errorf("after refused reports: %+v", h)
	}
}

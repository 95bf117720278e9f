package cli

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// TestStatusCommand: romana status exits 3 while a host's agent has not
// reported and 0 once every one has; host list shows the same states.
func TestStatusCommand(t *testing.T) {
	srv := servertest.Start(t)
	ctx := context.Background()
	s := adminSession(t, srv)
	for i, h := range []string{"h1", "h2"} {
		if _, err := srv.Client.AddHost(ctx, api.Host{Name: h, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := srv.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// romanad follows the store's revision on its watch feed.
	expect.Eventually(t, "romanad at the store's revision", 10*time.Second, func() error {
		st, err := srv.Client.Status(ctx)
		if err == nil && st.StoreRevision < snap.Revision {
			err = fmt.Errorf("store revision %d, want %d", st.StoreRevision, snap.Revision)
		}
		return err
	})
	report := func(host string) {
		t.Helper()
		now := time.Now()
		if err := srv.ClientAs(t, pki.Host(host)).PutStatus(ctx, api.AgentStatus{Host: host, Version: "v-test", Time: now,
			LastSync: now, Revision: snap.Revision, ResyncSeconds: 10, ReportSeconds: 5}); err != nil {
			t.Fatal(err)
		}
	}
	report("h1")
	r := s.run("", "status")
	if r.code != ExitNotConverged || r.stderr != "1 of 2 hosts not converged: h2 unreachable\n" ||
		!strings.Contains(r.stdout, "1 converged, 1 unreachable") ||
		!strings.Contains(r.stdout, "h2    unreachable  -         -          -            -        no report since romanad started") {
		t.Errorf("romana status with h2 silent: exit %d\nstdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if out := s.run("", "host", "list"); out.code != ExitOK || !strings.Contains(out.stdout, "STATUS") ||
		!strings.Contains(out.stdout, "converged") || !strings.Contains(out.stdout, "unreachable") {
		t.Errorf("host list: exit %d\n%s%s", out.code, out.stdout, out.stderr)
	}
	var js api.Status
	if r := s.run("", "status", "-o", "json"); r.code != ExitNotConverged {
		t.Errorf("status -o json: exit %d", r.code)
	}
	// --wait: h2 stays silent, so it gives up after the wait and says why.
	start := time.Now()
	if r := s.run("", "status", "--wait", "1500ms"); r.code != ExitNotConverged || time.Since(start) < 1500*time.Millisecond ||
		!strings.Contains(r.stderr, "h2 unreachable") {
		t.Errorf("status --wait 1500ms with h2 silent: exit %d after %v\nstderr: %s", r.code, time.Since(start), r.stderr)
	}
	if r := s.run("", "status", "--wait", "-1s"); r.code != ExitUsage {
		t.Errorf("status --wait -1s: exit %d, want %d", r.code, ExitUsage)
	}
	// ... and returns 0 as soon as h2 reports while it waits.
	waited := make(chan result, 1)
	go func() { waited <- s.run("", "status", "--wait", "60s") }()
	report("h2")
	select {
	case r := <-waited:
		if r.code != ExitOK || !strings.Contains(r.stdout, "2 converged") {
			t.Errorf("status --wait 60s, h2 reporting meanwhile: exit %d\nstdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("status --wait 60s did not return within 30s of h2's report")
	}
	r = s.run("", "status")
	if r.code != ExitOK || r.stderr != "" || !strings.Contains(r.stdout, "2 converged") {
		t.Errorf("romana status, both reported: exit %d\nstdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	s.okJSON(&js, "status")
	if len(js.Hosts) != 2 || !js.Converged() || js.Hosts[0].Report.Version != "v-test" || js.StoreRevision == 0 {
		t.Errorf("status -o json: %+v", js)
	}
	// A viewer may read it.
	viewer := cliSession{t: t, env: map[string]string{EnvConfig: srv.WriteCredential(t, pki.Viewer, t.TempDir())}}
	if r := viewer.run("", "status"); r.code != ExitOK {
		t.Errorf("viewer: exit %d %s", r.code, r.stderr)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/cli"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/health"
	"github.com/romana/romana/pki"
)

// romanaBinary returns $ROMANA_BIN/romana (set by the Makefile) or a
// fresh build of the command line.
func romanaBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("ROMANA_BIN"); d != "" {
		return filepath.Join(d, "romana")
	}
	d := t.TempDir()
	cmd := exec.Command("go", "build", "-o", d+"/", "github.com/romana/romana/cmd/romana")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build romana: %v\n%s", err, out)
	}
	return filepath.Join(d, "romana")
}

// romanaCLI runs the romana command line in the controller's namespace as
// admin, over TLS to romanad's underlay address.
type romanaCLI struct {
	c    *cluster
	bin  string
	conf string
}

func (r romanaCLI) run(args ...string) (stdout, stderr string, code int, err error) {
	ctx, cancel := context.WithTimeout(r.c.ctx, 20*time.Second)
	defer cancel()
	cmd := r.c.ctl.Command(ctx, append([]string{r.bin}, args...)...)
	cmd.Env = append(os.Environ(), cli.EnvConfig+"="+r.conf)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode(), nil
	}
	return o.String(), e.String(), 0, err
}

// status runs romana status -o json and checks its exit code against the
// states it printed.
func (r romanaCLI) status() (api.Status, int, error) {
	out, errOut, code, err := r.run("status", "-o", "json")
	if err != nil {
		return api.Status{}, code, err
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, code, fmt.Errorf("romana status -o json (exit %d): %v\n%s%s", code, err, out, errOut)
	}
	if want := map[bool]int{true: cli.ExitOK, false: cli.ExitNotConverged}[st.Converged()]; code != want {
		return st, code, fmt.Errorf("romana status: exit %d, want %d for %+v (stderr %q)", code, want, st, errOut)
	}
	return st, code, nil
}

// states is "h1=converged h2=unreachable ...".
func states(st api.Status) string {
	var parts []string
	for _, h := range st.Hosts {
		parts = append(parts, h.Host+"="+h.State)
	}
	return strings.Join(parts, " ")
}

// TestStatusEndToEnd: three real agents in their namespaces report to
// romanad over mutual TLS; romana status (the command-line binary, run in
// the controller's namespace as admin) shows every host converged at the
// store's revision and exits 0, also after a change. h2's agent is killed
// (SIGKILL, by its PID): within one resync interval plus the margin romana
// status shows h2 unreachable and exits 3, the others still converged.
// Started again, h2 is converged again.
func TestStatusEndToEnd(t *testing.T) {
	c := newCluster(t)
	// Agents report every half resync (at least 1 s): every 1 s here, so
	// a silent agent is unreachable after 2 × 1 s + 2 s = one resync
	// interval plus the 2 s margin.
	c.resync = 2 * time.Second
	every := c.resync / 2
	staleAfter := health.Options{}.StaleAfter(every)
	if limit := c.resync + health.DefaultMinMargin; staleAfter > limit {
		t.Fatalf("stale after %s, more than one resync plus the margin (%s)", staleAfter, limit)
	}
	r := romanaCLI{c: c, bin: romanaBinary(t), conf: c.srv.WriteCredential(t, pki.Admin, t.TempDir())}
	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h)
	}
	c.waitHealthy("h1", "h2", "h3")

	converged := func(what string) api.Status {
		t.Helper()
		var st api.Status
		expect.Eventually(t, what, wait, func() error {
			var err error
			st, _, err = r.status()
			if err != nil {
				return err
			}
			if len(st.Hosts) != 3 || !st.Converged() {
				return fmt.Errorf("%s", states(st))
			}
			for _, h := range st.Hosts {
				if h.Revision < st.StoreRevision || h.Report == nil || h.Report.Version == "" || h.LastSync.IsZero() || h.Report.NFTRules == 0 {
					return fmt.Errorf("host %s at revision %d (store %d): %+v", h.Host, h.Revision, st.StoreRevision, h)
				}
			}
			return nil
		})
		return st
	}
	st := converged("every host converged")
	t.Logf("converged at store revision %d: %s", st.StoreRevision, states(st))
	out, errOut, code, err := r.run("status")
	if err != nil || code != cli.ExitOK || !strings.Contains(out, "3 converged") {
		t.Errorf("romana status: exit %d %v\n%s%s", code, err, out, errOut)
	}
	t.Logf("$ romana status\n%s[exit %d]", out, code)
	out, errOut, code, err = r.run("host", "list")
	if err != nil || code != cli.ExitOK || strings.Count(out, " converged ") != 3 || !strings.Contains(out, "LAST-SYNC") {
		t.Errorf("romana host list: exit %d %v\n%s%s", code, err, out, errOut)
	}
	t.Logf("$ romana host list\n%s[exit %d]", out, code)

	// A change: every agent applies and reports the new revision.
	if _, err := c.srv.Client.AddTenant(c.ctx, api.Tenant{Name: "initech"}); err != nil {
		t.Fatal(err)
	}
	if st2 := converged("converged after a change"); st2.StoreRevision <= st.StoreRevision {
		t.Errorf("store revision %d after a change, was %d", st2.StoreRevision, st.StoreRevision)
	}

	// h2's agent dies.
	killed := time.Now()
	c.killAgent("h2")
	// Observing takes a romana run on top of the bound (a second or two
	// on a loaded machine).
	expect.Eventually(t, "h2 unreachable", staleAfter+5*time.Second, func() error {
		st, code, err := r.status()
		if err != nil {
			return err
		}
		for _, h := range st.Hosts {
			want := api.StateConverged
			if h.Host == "h2" {
				want = api.StateUnreachable
			}
			if h.State != want {
				return fmt.Errorf("%s (exit %d)", states(st), code)
			}
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("h2 unreachable %s after its agent was killed (stale after %s of silence, resync %s)", took.Round(time.Millisecond), staleAfter, c.resync)
	if took > c.resync+health.DefaultMinMargin+5*time.Second {
		t.Errorf("h2 shown unreachable after %s", took)
	}
	out, errOut, code, _ = r.run("status")
	if code != cli.ExitNotConverged || !strings.Contains(errOut, "h2 unreachable") || !strings.Contains(out, "no report for") {
		t.Errorf("romana status with h2 down: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("$ romana status\n%s%s[exit %d]", out, errOut, code)

	c.startAgent("h2")
	converged("h2 converged again")
}

package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/health"
)

// ExitNotConverged is the exit code of `romana status` when it printed the
// status and some host's agent is not converged.
const ExitNotConverged = 3

// exitError ends a command with a code of its own (not ExitError) and a
// message on stderr, after the command printed its output.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func newStatusCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every host's agent: converged, behind, problems or unreachable",
		Long: `Shows each registered host's agent as romanad judges it from the agent's
reports, with romanad's clock and the store's revision:

  converged    reports in time, has applied the store's newest revision, and
               its last reconciliation applied everything
  behind       reports, but lacks a revision the store has held for over 5s
  problems     up to date, but its last reconciliation failed, or skipped
               objects, met route conflicts or refused routes, or a BGP
               session is down (REASON says which)
  unreachable  no report for over two report intervals plus a margin (an
               agent reports every half --resync: a stopped agent shows
               within one resync interval plus the margin), or none since
               romanad started

REVISION is the store revision the agent applied, LAST-SYNC how long ago its
last fully successful reconciliation ended, LAST-REPORT how long ago romanad
heard from it (both on romanad's clock).

Exit status: 0 when every host is converged, 3 when the status was printed
and some host is not (so scripts can wait for convergence: --wait does it),
1 when romanad could not be asked, 2 for a wrong command line. With -o json or -o yaml the
output is romanad's answer: {time, storeRevision, hosts: [{host, state,
reasons, revision, lastReport, lastSync, report}]}, where report is the
agent's own last report (version, counts, problems, BGP sessions).`,
		Example: `  romana status
  romana status -o json | jq -r '.hosts[] | select(.state != "converged") | .host'

  # wait until every agent has converged (exit 0), for at most two minutes
  romana status --wait 2m`,
		Args: cobra.NoArgs,
	}
	wait := cmd.Flags().Duration("wait", 0, "ask again every second until every host is converged or this long has passed, then print the last answer (0: ask once)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *wait < 0 {
			return &UsageError{Err: fmt.Errorf("--wait %s: want a duration of 0 or more", *wait)}
		}
		c, err := g.Client()
		if err != nil {
			return err
		}
		deadline := time.Now().Add(*wait)
		for {
			ctx, cancel := g.Context(cmd)
			st, err := c.Status(ctx)
			cancel()
			if err == nil && (st.Converged() || !time.Now().Before(deadline)) {
				return emitStatus(g, cmd, st)
			}
			if !time.Now().Before(deadline) {
				return err // romanad could not be asked, to the end
			}
			select { // romanad unreachable or not converged yet: ask again
			case <-cmd.Context().Done():
				return cmd.Context().Err()
			case <-time.After(min(time.Second, time.Until(deadline))):
			}
		}
	}
	return cmd
}

// emitStatus prints st and ends with ExitNotConverged unless every host
// is converged.
func emitStatus(g *Globals, cmd *cobra.Command, st api.Status) error {
	if err := g.Emit(cmd, st, func(w io.Writer) { writeStatus(w, st) }); err != nil {
		return err
	}
	if st.Converged() {
		return nil
	}
	var not []string
	for _, h := range st.Hosts {
		if h.State != api.StateConverged {
			not = append(not, h.Host+" "+h.State)
		}
	}
	return &exitError{code: ExitNotConverged, msg: fmt.Sprintf("%d of %d hosts not converged: %s",
		len(not), len(st.Hosts), strings.Join(not, ", "))}
}

func init() { register(newStatusCmd) }

func writeStatus(w io.Writer, st api.Status) {
	fmt.Fprintf(w, "Store revision %d: %s\n\n", st.StoreRevision, health.Summary(st.Hosts))
	row(w, "HOST", "STATE", "REVISION", "LAST-SYNC", "LAST-REPORT", "VERSION", "REASON")
	for _, h := range st.Hosts {
		version, rev := "", ""
		if h.Report != nil {
			// The release, without the commit and date that follow it
			// (those are in -o json).
			version, _, _ = strings.Cut(h.Report.Version, " (")
			rev = fmt.Sprint(h.Revision)
		}
		reason := ""
		if len(h.Reasons) > 0 {
			reason = h.Reasons[0]
			if len(h.Reasons) > 1 {
				reason += fmt.Sprintf(" (+%d more)", len(h.Reasons)-1)
			}
		}
		row(w, h.Host, h.State, rev, ago(st.Time, h.LastSync), ago(st.Time, h.LastReport), version, reason)
	}
}

// ago is how long before now t was, "" when t is zero ("never" for a
// report that arrived but never synced is the caller's business).
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := max(0, now.Sub(t))
	switch {
	case d < 10*time.Second:
		d = d.Round(100 * time.Millisecond)
	case d < time.Hour:
		d = d.Round(time.Second)
	default:
		d = d.Round(time.Minute)
	}
	return d.String() + " ago"
}

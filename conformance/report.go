package conformance

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
)

// States of a case.
const (
	Passed  = "passed"
	Failed  = "failed"
	Skipped = "skipped"
)

// Case is one test case of a suite, as run.
type Case struct {
	Suite    string
	Name     string
	State    string // Passed, Failed or Skipped
	Reason   string // why it failed or was skipped (empty when passed)
	Duration time.Duration
	// FailedProtocols are the protocols of the probes that failed in a
	// failed case of ParseGoTest (the --protocol of the suite's
	// "FAILED Command was [/agnhost connect ...]" lines), sorted, unique.
	FailedProtocols []string
	// SCTPProbesNotMade counts the SCTP probes a case of ParseGoTest
	// logged as not made ("SKIPPED SCTP probe": the suite ran with
	// $NPAPI_SKIP_SCTP_PROBES, see scripts/kube-e2e.sh).
	SCTPProbesNotMade int
}

var protocolRE = regexp.MustCompile(`FAILED Command was .*--protocol=([a-z]+)`)

// Skip is a case left out on purpose: a pattern over its name and why.
type Skip struct {
	Pattern *regexp.Regexp
	Cause   string
}

// ginkgoReport is the part of Ginkgo v2's --json-report that we read.
type ginkgoReport struct {
	SuiteDescription string
	SpecReports      []struct {
		ContainerHierarchyTexts []string
		LeafNodeText            string
		LeafNodeType            string
		State                   string
		RunTime                 time.Duration
		Failure                 struct {
			Message string
		}
	}
}

// ParseGinkgo reads a Ginkgo --json-report (of e2e.test) into the cases
// whose full text matches focus, as suite: the ones left out by
// --ginkgo.skip (a skip pattern matching them) are skipped with that
// skip's cause; other skips keep the message of their Skip call.
func ParseGinkgo(data []byte, suite string, focus *regexp.Regexp, skips []Skip) ([]Case, error) {
	var reports []ginkgoReport
	if err := json.Unmarshal(data, &reports); err != nil {
		return nil, fmt.Errorf("decode ginkgo JSON report: %w", err)
	}
	var cases []Case
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
			if !focus.MatchString(name) {
				continue
			}
			c := Case{Suite: suite, Name: name, State: s.State, Duration: s.RunTime}
			switch s.State {
			case Passed:
			case Skipped:
				c.Reason = firstLine(s.Failure.Message)
				for _, sk := range skips {
					if sk.Pattern.MatchString(name) {
						c.Reason = sk.Cause
						break
					}
				}
			default: // failed, panicked, timedout, interrupted, aborted
				c.State = Failed
				c.Reason = s.State + ": " + clip(s.Failure.Message, 600)
			}
			cases = append(cases, c)
		}
	}
	return cases, nil
}

// testEvent is one line of `go test -json` (test2json).
type testEvent struct {
	Action  string
	Test    string
	Output  string
	Elapsed float64
}

// ParseGoTest reads the test2json stream of a Go test binary into the
// cases at depth levels of subtests (1: TestX, 2: TestX/Y), as suite.
// Tests matching a skip (left out with -test.skip, so never reported) are
// added as skipped with its cause when listed in all (the names the run
// would have had). A failed case's reason is the failing subtests' names
// and the lines of their output that say what failed.
func ParseGoTest(r io.Reader, suite string, depth int, all []string, skips []Skip) ([]Case, error) {
	out := map[string][]string{} // test -> output lines
	final := map[string]testEvent{}
	var order []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e testEvent
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("decode test2json line %q: %w", clip(string(line), 80), err)
		}
		if e.Test == "" {
			continue
		}
		switch e.Action {
		case "run":
			order = append(order, e.Test)
		case "output":
			out[e.Test] = append(out[e.Test], strings.TrimRight(e.Output, "\n"))
		case "pass", "fail", "skip":
			final[e.Test] = e
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read test2json: %w", err)
	}
	var cases []Case
	seen := map[string]bool{}
	for _, name := range order {
		if strings.Count(name, "/")+1 != depth || seen[name] {
			continue
		}
		seen[name] = true
		e, ok := final[name]
		c := Case{Suite: suite, Name: name, Duration: time.Duration(e.Elapsed * float64(time.Second))}
		for sub, lines := range out {
			if sub == name || strings.HasPrefix(sub, name+"/") {
				for _, l := range lines {
					if strings.Contains(l, "SKIPPED SCTP probe") {
						c.SCTPProbesNotMade++
					}
				}
			}
		}
		switch {
		case !ok:
			c.State, c.Reason = Failed, "no result (the run ended before this test did)"
		case e.Action == "pass":
			c.State = Passed
		case e.Action == "skip":
			c.State, c.Reason = Skipped, skipReason(out[name])
		default:
			c.State, c.Reason = Failed, failReason(name, order, final, out)
			for sub, lines := range out {
				if sub != name && !strings.HasPrefix(sub, name+"/") {
					continue
				}
				for _, l := range lines {
					if m := protocolRE.FindStringSubmatch(l); m != nil && !slices.Contains(c.FailedProtocols, m[1]) {
						c.FailedProtocols = append(c.FailedProtocols, m[1])
					}
				}
			}
			slices.Sort(c.FailedProtocols)
		}
		cases = append(cases, c)
	}
	for _, name := range all {
		if seen[name] {
			continue
		}
		for _, sk := range skips {
			if sk.Pattern.MatchString(name) {
				cases = append(cases, Case{Suite: suite, Name: name, State: Skipped, Reason: sk.Cause})
				break
			}
		}
	}
	return cases, nil
}

// skipReason is the message of a t.Skip: its output lines but the "---
// SKIP" and "=== RUN" ones.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "---") || strings.HasPrefix(t, "===") {
			continue
		}
		msg = append(msg, t)
	}
	return clip(strings.Join(msg, " "), 300)
}

// failReason names the failing leaf subtests of name and, for each, the
// output lines that say what went wrong.
func failReason(name string, order []string, final map[string]testEvent, out map[string][]string) string {
	var parts []string
	for _, sub := range order {
		if sub != name && !strings.HasPrefix(sub, name+"/") {
			continue
		}
		if final[sub].Action != "fail" || hasFailedChild(sub, order, final) {
			continue
		}
		var what []string
		for i, l := range out[sub] {
			t := strings.TrimSpace(l)
			if strings.HasPrefix(t, "Error:") && i+1 < len(out[sub]) { // testify: the error is on the next line
				t += " " + strings.TrimSpace(out[sub][i+1])
			}
			if (strings.Contains(t, "FAILED") || strings.Contains(t, "Error:") || strings.Contains(t, "Expected")) && !slices.Contains(what, t) {
				what = append(what, t)
			}
		}
		parts = append(parts, strings.TrimPrefix(sub, name+"/")+": "+clip(strings.Join(what, "; "), 400))
	}
	return strings.Join(parts, " | ")
}

func hasFailedChild(name string, order []string, final map[string]testEvent) bool {
	for _, sub := range order {
		if strings.HasPrefix(sub, name+"/") && final[sub].Action == "fail" {
			return true
		}
	}
	return false
}

// Count returns how many cases passed, failed and were skipped.
func Count(cases []Case) (passed, failed, skipped int) {
	for _, c := range cases {
		switch c.State {
		case Passed:
			passed++
		case Failed:
			failed++
		default:
			skipped++
		}
	}
	return
}

// Render writes the results block of docs/conformance.md for one suite:
// the counts, then every failure and every skip with its reason, then the
// names of the cases that passed.
func Render(w io.Writer, title string, cases []Case) {
	p, f, s := Count(cases)
	fmt.Fprintf(w, "### %s\n\n%d passed, %d failed, %d skipped (of %d).\n", title, p, f, s, len(cases))
	for _, st := range []struct{ state, head string }{{Failed, "Failed"}, {Skipped, "Skipped"}} {
		var rows []Case
		for _, c := range cases {
			if c.State == st.state {
				rows = append(rows, c)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n\n| case | reason |\n|---|---|\n", st.head)
		for _, c := range rows {
			fmt.Fprintf(w, "| %s | %s%s |\n", cell(c.Name), cell(c.Reason), sctpNote(c))
		}
	}
	var passed []string
	var total time.Duration
	for _, c := range cases {
		total += c.Duration
		if c.State == Passed {
			passed = append(passed, fmt.Sprintf("- %s (%.0f s%s)", c.Name, c.Duration.Seconds(), sctpNote(c)))
		}
	}
	if len(passed) > 0 {
		fmt.Fprintf(w, "\n<details><summary>Passed (%d)</summary>\n\n%s\n\n</details>\n", len(passed), strings.Join(passed, "\n"))
	}
	fmt.Fprintf(w, "\nTime in the cases: %s.\n", total.Round(time.Second))
}

// sctpNote says how many SCTP probes a case did not make.
func sctpNote(c Case) string {
	if c.SCTPProbesNotMade == 0 {
		return ""
	}
	return fmt.Sprintf("; %d SCTP probes not made", c.SCTPProbesNotMade)
}

// cell makes s safe in a markdown table cell.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

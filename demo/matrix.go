package demo

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/romana/romana/api"
)

// Endpoint is one demo workload: a namespace attached through the CNI plugin.
type Endpoint struct {
	Name    string     `json:"name"`
	Host    string     `json:"host"`
	Tenant  string     `json:"tenant"`
	Segment string     `json:"segment"`
	IP      netip.Addr `json:"ip"`
	IP6     netip.Addr `json:"ip6,omitzero"` // --dual-stack
	NS      string     `json:"netns"`
}

// Label is how the endpoint appears in tables.
func (e Endpoint) Label() string { return e.Tenant + "/" + e.Segment + "@" + e.Host }

// Expect says whether src may open a connection to dst under tenant isolation
// alone (no policies): a tenant in mode "none" is open to all; "tenant" admits
// its own endpoints; "segment" admits only the same segment.
func Expect(modes map[string]string, src, dst Endpoint) bool {
	switch modes[dst.Tenant] {
	case api.IsolationNone:
		return true
	case api.IsolationSegment:
		return src.Tenant == dst.Tenant && src.Segment == dst.Segment
	default:
		return src.Tenant == dst.Tenant
	}
}

// Cell is one ordered pair's expected and observed outcome.
type Cell struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Expected bool   `json:"expected"`
	TCP      bool   `json:"tcp"`
	Ping     bool   `json:"ping"`
}

// OK reports whether both probes matched the expectation.
func (c Cell) OK() bool { return c.TCP == c.Expected && c.Ping == c.Expected }

// Matrix is the connectivity result for every ordered pair of endpoints.
type Matrix struct {
	Endpoints []Endpoint `json:"endpoints"`
	Cells     []Cell     `json:"cells"` // row-major: Cells[i*n+j] is Endpoints[i] -> Endpoints[j]
}

// Mismatches returns the cells whose observation differs from expectation.
func (m Matrix) Mismatches() []Cell {
	var out []Cell
	for _, c := range m.Cells {
		if c.From != c.To && !c.OK() {
			out = append(out, c)
		}
	}
	return out
}

// Render writes the matrix: one row per source, one column per destination.
// "ok" = allowed as expected, "--" = blocked as expected, "X!" marks a
// mismatch (with what was observed).
func (m Matrix) Render(w io.Writer) {
	n := len(m.Endpoints)
	width := 0
	for _, e := range m.Endpoints {
		width = max(width, len(e.Label()))
	}
	fmt.Fprintf(w, "%-*s   ", width, "from \\ to")
	for j := range m.Endpoints {
		fmt.Fprintf(w, " %3s", fmt.Sprintf("e%d", j+1))
	}
	fmt.Fprintln(w)
	for i, src := range m.Endpoints {
		fmt.Fprintf(w, "%-*s e%-2d", width, src.Label(), i+1)
		for j := 0; j < n; j++ {
			c := m.Cells[i*n+j]
			s := "  ."
			switch {
			case i == j:
			case !c.OK():
				s = " X!"
			case c.Expected:
				s = " ok"
			default:
				s = " --"
			}
			fmt.Fprintf(w, " %s", s)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, strings.Repeat(" ", width)+"     ok = reachable as expected, -- = blocked as expected, X! = mismatch")
}

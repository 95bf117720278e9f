package api

import (
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"
)

// AgentStatus is what a host's agent reports about itself (PUT
// /v1/status/{host}), after every reconciliation and every ReportSeconds.
// Times are the agent's clock: romanad uses only differences between them
// (LastSync relative to Time), never compares them with its own.
type AgentStatus struct {
	Host    string `json:"host"`
	Version string `json:"version"`
	// Time is when the agent made the report.
	Time time.Time `json:"time"`
	// Revision is the store revision of the state the agent applied.
	Revision int64 `json:"revision"`
	// LastSync is the end of the last fully successful reconciliation
	// (zero: none yet).
	LastSync time.Time `json:"lastSync,omitzero"`
	// ResyncSeconds is the agent's full reconciliation interval,
	// ReportSeconds the interval of its reports when nothing changes:
	// romanad takes an agent silent for over two report intervals (plus
	// a margin) for unreachable.
	ResyncSeconds float64 `json:"resyncSeconds"`
	ReportSeconds float64 `json:"reportSeconds"`
	// Error is why the last reconciliation failed ("" when it succeeded).
	Error string `json:"error,omitempty"`
	// Problems are objects skipped and policies nftables rejected;
	// RouteConflicts desired routes a foreign route keeps out;
	// RoutesRefused routes the host may not install (docs/agent.md).
	// Each list holds at most MaxStatusItems entries (the agent
	// summarizes the rest in the last one).
	Problems       []string `json:"problems,omitempty"`
	RouteConflicts []string `json:"routeConflicts,omitempty"`
	RoutesRefused  []string `json:"routesRefused,omitempty"`
	// Counts of the last reconciliation.
	Routes              int `json:"routes"`
	RoutesPending       int `json:"routesPending"`
	NeighborsUnresolved int `json:"neighborsUnresolved"`
	NFTRules            int `json:"nftRules"`
	NFTElements         int `json:"nftElements"`
	// BGP are the agent's BGP sessions (with --bgp), by peer address.
	BGP []BGPSession `json:"bgp,omitempty"`
}

// BGPSession is one BGP session of an agent.
type BGPSession struct {
	Device      string     `json:"device,omitempty"`
	Peer        netip.Addr `json:"peer"`
	ASN         uint32     `json:"asn"`
	State       string     `json:"state"` // established, active, idle, connect, opensent, openconfirm
	Established bool       `json:"established"`
	Received    uint64     `json:"received"` // prefixes received
}

// Bounds of an AgentStatus, checked by romanad (Screen) and kept by the
// agent: a report fits in a request body (64 KiB) whatever the host holds.
const (
	MaxStatusItems    = 50  // entries of Problems, RouteConflicts, RoutesRefused
	MaxStatusText     = 256 // bytes of Error and of each entry
	MaxStatusSessions = 64  // BGP sessions
	MaxVersionLen     = 64
	// MaxReportSeconds bounds ReportSeconds and ResyncSeconds (a day).
	MaxReportSeconds = 86400
)

// Screen checks a report's bounds and syntax, naming the first field out
// of them.
func (s AgentStatus) Screen() error {
	if len(s.Version) > MaxVersionLen || !printable(s.Version) {
		return fmt.Errorf("version: at most %d printable bytes", MaxVersionLen)
	}
	if s.Revision < 0 {
		return fmt.Errorf("revision: %d is negative", s.Revision)
	}
	if s.Time.IsZero() {
		return fmt.Errorf("time: missing")
	}
	if !s.LastSync.IsZero() && s.LastSync.After(s.Time) {
		return fmt.Errorf("lastSync: %s is after the report's time %s", s.LastSync.Format(time.RFC3339Nano), s.Time.Format(time.RFC3339Nano))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"resyncSeconds", s.ResyncSeconds}, {"reportSeconds", s.ReportSeconds}} {
		if !(f.v > 0 && f.v <= MaxReportSeconds) { // also refuses NaN
			return fmt.Errorf("%s: %v is not in (0, %d]", f.name, f.v, MaxReportSeconds)
		}
	}
	if len(s.Error) > MaxStatusText || !utf8.ValidString(s.Error) {
		return fmt.Errorf("error: at most %d bytes of UTF-8", MaxStatusText)
	}
	for _, f := range []struct {
		name string
		l    []string
	}{{"problems", s.Problems}, {"routeConflicts", s.RouteConflicts}, {"routesRefused", s.RoutesRefused}} {
		if len(f.l) > MaxStatusItems {
			return fmt.Errorf("%s: %d entries, at most %d", f.name, len(f.l), MaxStatusItems)
		}
		for i, x := range f.l {
			if len(x) > MaxStatusText || !utf8.ValidString(x) {
				return fmt.Errorf("%s[%d]: at most %d bytes of UTF-8", f.name, i, MaxStatusText)
			}
		}
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"routes", s.Routes}, {"routesPending", s.RoutesPending}, {"neighborsUnresolved", s.NeighborsUnresolved},
		{"nftRules", s.NFTRules}, {"nftElements", s.NFTElements}} {
		if f.n < 0 {
			return fmt.Errorf("%s: %d is negative", f.name, f.n)
		}
	}
	if len(s.BGP) > MaxStatusSessions {
		return fmt.Errorf("bgp: %d sessions, at most %d", len(s.BGP), MaxStatusSessions)
	}
	for i, b := range s.BGP {
		if !b.Peer.IsValid() || b.Peer.Zone() != "" {
			return fmt.Errorf("bgp[%d].peer: not an IP address", i)
		}
		if len(b.State) > 32 || !printable(b.State) || len(b.Device) > 253 || !printable(b.Device) {
			return fmt.Errorf("bgp[%d]: state or device too long or not printable", i)
		}
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// TruncateStatus fits a list and its entries into the bounds of an
// AgentStatus: at most MaxStatusItems entries, the last one saying how many
// more there were, each cut to MaxStatusText bytes.
func TruncateStatus(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	out := make([]string, 0, min(len(l), MaxStatusItems))
	for i, x := range l {
		if i == MaxStatusItems-1 && len(l) > MaxStatusItems {
			out = append(out, fmt.Sprintf("... and %d more", len(l)-i))
			break
		}
		out = append(out, TruncateText(x))
	}
	return out
}

// TruncateText cuts s to MaxStatusText bytes, at a rune boundary.
func TruncateText(s string) string {
	if len(s) <= MaxStatusText {
		return s
	}
	cut := MaxStatusText - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// States of a host's agent, as romanad judges them (HostStatus.State).
const (
	StateConverged   = "converged"   // reports in time, at the store's revision, nothing wrong
	StateBehind      = "behind"      // reports, but has not applied a revision the store has held for longer than a grace
	StateProblems    = "problems"    // up to date, but its last reconciliation failed or left something out
	StateUnreachable = "unreachable" // no report for over two report intervals plus a margin (or none since romanad started)
)

// HostStatus is romanad's judgement of one host's agent (GET /v1/status),
// made with romanad's clock and the store's revision.
type HostStatus struct {
	Host  string `json:"host"`
	State string `json:"state"`
	// Reasons say why the state is not converged, one per finding.
	Reasons []string `json:"reasons,omitempty"`
	// Revision is the agent's, StoreRevision the store's newest revision
	// that changed an object.
	Revision int64 `json:"revision"`
	// LastReport and LastSync are romanad's clock: when the last report
	// arrived, and when the agent's last successful reconciliation ended
	// (zero: never).
	LastReport time.Time `json:"lastReport,omitzero"`
	LastSync   time.Time `json:"lastSync,omitzero"`
	// Report is the agent's last report (nil: none since romanad started).
	Report *AgentStatus `json:"report,omitempty"`
}

// Status is every registered host's agent, judged at Time (GET /v1/status).
type Status struct {
	Time          time.Time    `json:"time"`
	StoreRevision int64        `json:"storeRevision"`
	Hosts         []HostStatus `json:"hosts"`
}

// Converged reports whether every host is converged.
func (s Status) Converged() bool {
	for _, h := range s.Hosts {
		if h.State != StateConverged {
			return false
		}
	}
	return true
}

package api

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestAgentStatusScreen(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ok := func() AgentStatus {
		return AgentStatus{Host: "h1", Version: "v1.2.3 (abc) go1.26", Time: now, LastSync: now.Add(-time.Second), Revision: 7,
			ResyncSeconds: 10, ReportSeconds: 5, BGP: []BGPSession{{Peer: netip.MustParseAddr("192.0.2.1"), ASN: 65000, State: "established"}}}
	}
	if err := ok().Screen(); err != nil {
		t.Fatalf("a good report: %v", err)
	}
	many := make([]string, MaxStatusItems+1)
	for _, tc := range []struct {
		name string
		edit func(*AgentStatus)
		want string
	}{
		{"long version", func(s *AgentStatus) { s.Version = strings.Repeat("v", 65) }, "version: at most 64 printable bytes"},
		{"control in version", func(s *AgentStatus) { s.Version = "dev\n" }, "version: at most 64 printable bytes"},
		{"negative revision", func(s *AgentStatus) { s.Revision = -1 }, "revision: -1 is negative"},
		{"no time", func(s *AgentStatus) { s.Time = time.Time{} }, "time: missing"},
		{"sync after report", func(s *AgentStatus) { s.LastSync = now.Add(time.Second) }, "lastSync: 2025-01-01T00:00:01Z is after the report's time 2025-01-01T00:00:00Z"},
		{"zero resync", func(s *AgentStatus) { s.ResyncSeconds = 0 }, "resyncSeconds: 0 is not in (0, 86400]"},
		{"NaN report", func(s *AgentStatus) { s.ReportSeconds = math.NaN() }, "reportSeconds: NaN is not in (0, 86400]"},
		{"huge report", func(s *AgentStatus) { s.ReportSeconds = 1e9 }, "reportSeconds: 1e+09 is not in (0, 86400]"},
		{"long error", func(s *AgentStatus) { s.Error = strings.Repeat("e", 257) }, "error: at most 256 bytes of UTF-8"},
		{"too many problems", func(s *AgentStatus) { s.Problems = many }, "problems: 51 entries, at most 50"},
		{"long conflict", func(s *AgentStatus) { s.RouteConflicts = []string{strings.Repeat("c", 257)} }, "routeConflicts[0]: at most 256 bytes of UTF-8"},
		{"bad utf-8", func(s *AgentStatus) { s.RoutesRefused = []string{"\xff"} }, "routesRefused[0]: at most 256 bytes of UTF-8"},
		{"negative count", func(s *AgentStatus) { s.NFTRules = -2 }, "nftRules: -2 is negative"},
		{"too many sessions", func(s *AgentStatus) { s.BGP = make([]BGPSession, 65) }, "bgp: 65 sessions, at most 64"},
		{"session without peer", func(s *AgentStatus) { s.BGP[0].Peer = netip.Addr{} }, "bgp[0].peer: not an IP address"},
	} {
		s := ok()
		tc.edit(&s)
		if err := s.Screen(); err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

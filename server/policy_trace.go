package server

import (
	"cmp"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/policy"
)

// policyRoutes registers policy explainability: trace (computed here from
// the current snapshot with package policy's compiler and evaluator, the
// same rules the agents apply) and per-host rule counters, which agents
// report and romanad keeps in memory (they are live counters, not state:
// a restarted romanad shows them again after the agents' next report).
func (s *Server) policyRoutes() {
	s.handle("GET /v1/policy/trace", s.policyTrace)
	s.handle("GET /v1/policy/stats", s.policyStats)
	s.handle("PUT /v1/policy/stats/{host}", s.putPolicyStats)
}

// maxCounters bounds one host's report.
const maxCounters = 100000

// statsStore holds the last report of each host.
type statsStore struct {
	mu     sync.Mutex
	byHost map[string]api.HostPolicyStats
}

func (s *Server) policyTrace(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var p policy.Packet
	addr := func(name string) (netip.Addr, error) {
		v := q.Get(name)
		if v == "" {
			return netip.Addr{}, api.Errorf(api.ReasonInvalid, "query parameter %s is required", name)
		}
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return netip.Addr{}, api.Errorf(api.ReasonInvalid, "query parameter %s: %q is not an IP address", name, v)
		}
		return a, nil
	}
	num := func(name string, bits int) (uint64, error) {
		v := q.Get(name)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseUint(v, 10, bits)
		if err != nil {
			return 0, api.Errorf(api.ReasonInvalid, "query parameter %s: %q is not a number in 0-%d", name, v, uint64(1)<<bits-1)
		}
		return n, nil
	}
	var err error
	if p.Src, err = addr("from"); err != nil {
		return err
	}
	if p.Dst, err = addr("to"); err != nil {
		return err
	}
	p.Proto = cmp.Or(q.Get("proto"), api.ProtoTCP)
	port, err := num("port", 16)
	if err != nil {
		return err
	}
	typ, err := num("icmpType", 8)
	if err != nil {
		return err
	}
	code, err := num("icmpCode", 8)
	if err != nil {
		return err
	}
	if (p.Proto == api.ProtoICMP || p.Proto == policy.ProtoICMPv6) && q.Get("icmpType") == "" {
		typ = 8 // echo request
		if p.Src.Is6() {
			typ = 128
		}
	}
	p.Port, p.ICMPType, p.ICMPCode = uint16(port), uint8(typ), uint8(code)
	snap, err := s.reg.Snapshot(r.Context())
	if err != nil {
		return err
	}
	out, err := policy.Trace(snap, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) policyStats(w http.ResponseWriter, r *http.Request) error {
	s.stats.mu.Lock()
	out := make([]api.HostPolicyStats, 0, len(s.stats.byHost))
	for _, h := range s.stats.byHost {
		out = append(out, h)
	}
	s.stats.mu.Unlock()
	slices.SortFunc(out, func(a, b api.HostPolicyStats) int { return cmp.Compare(a.Host, b.Host) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) putPolicyStats(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if err := api.ValidateName("host", host); err != nil {
		return api.Errorf(api.ReasonInvalid, "%v", err)
	}
	if err := own(r, host); err != nil {
		return err
	}
	var in api.HostPolicyStats
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	if in.Host != "" && in.Host != host {
		return api.Errorf(api.ReasonInvalid, "host: %q does not match the path's host %q", in.Host, host)
	}
	if len(in.Counters) > maxCounters {
		return api.Errorf(api.ReasonInvalid, "counters: %d entries, at most %d", len(in.Counters), maxCounters)
	}
	for i, c := range in.Counters {
		if err := api.ValidateName("policy", c.Policy); err != nil {
			return api.Errorf(api.ReasonInvalid, "counters[%d].policy: %v", i, err)
		}
		if c.Stage != api.DirectionIngress && c.Stage != api.DirectionEgress {
			return api.Errorf(api.ReasonInvalid, "counters[%d].stage: %q is not ingress or egress", i, c.Stage)
		}
		if c.Rule < 0 {
			return api.Errorf(api.ReasonInvalid, "counters[%d].rule: %d is negative", i, c.Rule)
		}
	}
	if _, err := s.reg.GetHost(r.Context(), host); err != nil {
		return err
	}
	in.Host = host
	if in.Time.IsZero() {
		in.Time = time.Now().UTC()
	}
	s.stats.mu.Lock()
	if s.stats.byHost == nil {
		s.stats.byHost = map[string]api.HostPolicyStats{}
	}
	s.stats.byHost[host] = in
	s.stats.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

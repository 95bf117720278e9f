package server

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/feed"
	"github.com/romana/romana/health"
)

// statusRoutes registers the agents' status: each host's agent reports
// itself (PUT /v1/status/{host}, its own host only), and GET /v1/status
// judges every registered host's agent with package health, with this
// romanad's clock and the store's revision as this romanad saw it change.
//
// Reports are kept in memory, like policy counters, not in etcd: an agent
// reports after every reconciliation and every half resync interval, and
// writing that to the store would make a store revision per report (a
// thousand hosts: hundreds per second) for data that is worthless a
// minute later. The costs: a restarted romanad knows no agent until each
// reports again (within one report interval; meanwhile they show as
// unreachable, saying so), and with several romanads on one store each
// knows only the agents that report to it.
func (s *Server) statusRoutes() {
	s.handle("GET /v1/status", s.getStatus)
	s.handle("PUT /v1/status/{host}", s.putStatus)
}

// statusStore holds each host's last report and the store's revision over
// time.
type statusStore struct {
	mu      sync.Mutex
	up      time.Time // when the server was created
	reports map[string]health.Report
	revs    health.Revisions
	opts    health.Options
}

// observe records the store's newest object revision, seen now.
func (st *statusStore) observe(rev int64, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.revs.Observe(rev, now)
}

// followRevisions keeps the status store's revisions current: the newest
// object revision in the store when it starts, then the revision of every
// batch of object events on the registry's feed, at the time it arrives.
// It subscribes before reading the store, so no change falls between.
func (s *Server) followRevisions(ctx context.Context) {
	for ctx.Err() == nil {
		sub, err := s.reg.Watch(ctx, 0)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("status: follow the store's revision", "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		if rev, err := s.reg.ObjectRevision(ctx); err != nil {
			s.log.Warn("status: read the store's revision", "err", err)
		} else {
			s.status.observe(rev, s.now())
		}
		s.followSub(ctx, sub)
		sub.Close()
	}
}

// followSub records the revision of each batch until ctx ends or the
// subscription does.
func (s *Server) followSub(ctx context.Context, sub *feed.Sub) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Ready():
			for {
				b, ok := sub.Next()
				if !ok {
					break
				}
				if b.Err != nil {
					s.log.Info("status: the store's revision feed ended; following it again", "err", b.Err)
					return
				}
				if n := len(b.Events); n > 0 {
					s.status.observe(b.Events[n-1].Revision, s.now())
				}
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (s *Server) putStatus(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if err := api.ValidateName("host", host); err != nil {
		return api.Errorf(api.ReasonInvalid, "%v", err)
	}
	if err := own(r, host); err != nil {
		return err
	}
	var in api.AgentStatus
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	if in.Host != "" && in.Host != host {
		return api.Errorf(api.ReasonInvalid, "host: %q does not match the path's host %q", in.Host, host)
	}
	if err := in.Screen(); err != nil {
		return api.Errorf(api.ReasonInvalid, "%v", err)
	}
	if _, err := s.reg.GetHost(r.Context(), host); err != nil {
		return err
	}
	in.Host = host
	st := &s.status
	st.mu.Lock()
	if st.reports == nil {
		st.reports = map[string]health.Report{}
	}
	st.reports[host] = health.Report{Status: in, Received: s.now()}
	st.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// getStatus judges every registered host, sorted by name. Reports of
// hosts no longer registered are dropped once they are stale.
func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) error {
	hosts, err := s.reg.ListHosts(r.Context())
	if err != nil {
		return err
	}
	now := s.now()
	st := &s.status
	st.mu.Lock()
	out := api.Status{Time: now.UTC(), StoreRevision: st.revs.Current(), Hosts: make([]api.HostStatus, 0, len(hosts))}
	live := map[string]bool{}
	for _, h := range hosts {
		live[h.Name] = true
		var rep *health.Report
		if x, ok := st.reports[h.Name]; ok {
			rep = &x
		}
		out.Hosts = append(out.Hosts, health.Judge(now, h.Name, rep, &st.revs, st.up, st.opts))
	}
	for name, rep := range st.reports {
		if !live[name] && now.Sub(rep.Received) > st.opts.StaleAfter(rep.Every()) {
			delete(st.reports, name) // a removed host's agent, gone quiet
		}
	}
	st.mu.Unlock()
	slices.SortFunc(out.Hosts, func(a, b api.HostStatus) int { return cmp.Compare(a.Host, b.Host) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

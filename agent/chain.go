package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/romana/romana/hoststate"
)

// SteerFirewall applies the steering nft table; *firewall.Steer implements it.
type SteerFirewall interface {
	Apply(ctx context.Context, st hoststate.Steering) (bool, error)
	Cleanup(ctx context.Context) error
}

// SteerRoutes applies the steering ip rules and per-hop route tables;
// *route.Policy implements it.
type SteerRoutes interface {
	Sync(ctx context.Context, rules []hoststate.IPRule, routes []hoststate.TableRoute) error
	Cleanup(ctx context.Context) error
}

// Prober health-checks a local service function; route.Pinger implements it.
type Prober interface {
	Probe(ctx context.Context, ip netip.Addr) error
}

// SteerConfig configures a Steerer.
type SteerConfig struct {
	Host     string
	Firewall SteerFirewall
	Routes   SteerRoutes
	Prober   Prober // nil: every function is taken as healthy
	// ProbeInterval is the period of health checks (default 1s); a
	// function is down after FailAfter consecutive failed probes (default
	// 2) and up again after one successful probe.
	ProbeInterval time.Duration
	FailAfter     int
	Log           *slog.Logger
}

// Steerer implements service chains on this host (see package hoststate,
// chain.go): a manager of the agent's loop (Config.Steering) that applies
// the steering table, ip rules and route tables, and a prober goroutine
// that health-checks local service functions and reports changes to the
// loop. It leaves its state in place when the agent stops.
type Steerer struct {
	cfg SteerConfig
	log *slog.Logger

	mu     sync.Mutex
	probes []netip.Addr       // local functions, from the last computation
	fails  map[netip.Addr]int // consecutive failed probes
}

// NewSteerer checks cfg and fills in its defaults.
func NewSteerer(cfg SteerConfig) (*Steerer, error) {
	if cfg.Host == "" || cfg.Firewall == nil || cfg.Routes == nil {
		return nil, errors.New("steering: Host, Firewall and Routes are required")
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = time.Second
	}
	if cfg.FailAfter <= 0 {
		cfg.FailAfter = 2
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Steerer{cfg: cfg, log: cfg.Log.With("host", cfg.Host, "part", "chains"), fails: map[netip.Addr]int{}}, nil
}

// probeLoop probes the local functions every interval, all in parallel,
// and calls changed when one changes state. It writes nothing to the
// kernel.
func (s *Steerer) probeLoop(ctx context.Context, changed func()) {
	if s.cfg.Prober == nil {
		return
	}
	t := time.NewTicker(s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		ips := slices.Clone(s.probes)
		s.mu.Unlock()
		results := make([]error, len(ips))
		var wg sync.WaitGroup
		for i, ip := range ips {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeInterval)
				defer cancel()
				results[i] = s.cfg.Prober.Probe(pctx, ip)
			})
		}
		wg.Wait()
		up := false
		s.mu.Lock()
		for i, ip := range ips {
			before := s.fails[ip] < s.cfg.FailAfter
			if results[i] == nil {
				s.fails[ip] = 0
			} else {
				s.fails[ip]++
			}
			if now := s.fails[ip] < s.cfg.FailAfter; now != before {
				up = true
				s.log.Warn("service function health changed", "ip", ip, "up", now, "err", results[i])
			}
		}
		s.mu.Unlock()
		if up {
			changed()
		}
	}
}

func (s *Steerer) alive(ip netip.Addr) bool {
	return s.fails[ip] < s.cfg.FailAfter // called with s.mu held
}

// steeringManager is the loop's side of a Steerer.
type steeringManager struct {
	s        *Steerer
	host     string
	problems []string
}

func (*steeringManager) name() string { return "chains" }

func (*steeringManager) deps() input {
	return inNetwork | inHost | inTenant | inSegment | inChain | inFunction | inProbe | inResync | inRetry
}

// sync sets routes and rules first (a marked packet always finds its
// table), then the marking table.
func (m *steeringManager) sync(ctx context.Context, p *pass) (bool, error) {
	s := m.s
	s.mu.Lock()
	st, err := hoststate.ComputeSteeringModel(p.m, m.host, s.alive)
	if err == nil {
		s.probes = st.Probes
		for ip := range s.fails {
			if !slices.Contains(st.Probes, ip) {
				delete(s.fails, ip)
			}
		}
	}
	s.mu.Unlock()
	if err != nil {
		return false, err
	}
	logProblems(s.log, "chain skipped", st.Problems, &m.problems)
	var errs []error
	if err := s.cfg.Routes.Sync(ctx, st.IPRules, st.Routes); err != nil {
		errs = append(errs, err)
	}
	if _, err := s.cfg.Firewall.Apply(ctx, st); err != nil {
		errs = append(errs, err)
	}
	return false, errors.Join(errs...)
}

// CleanupSteering removes the steering table, ip rules and chain routes.
func CleanupSteering(ctx context.Context, fw SteerFirewall, routes SteerRoutes) error {
	return errors.Join(fw.Cleanup(ctx), routes.Cleanup(ctx))
}

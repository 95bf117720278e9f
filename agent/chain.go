package agent

import (
	"context"
	"errors"
	"fmt"
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
	Prober   Prober        // nil: every function is taken as healthy
	Resync   time.Duration // default 10s
	// ProbeInterval is the period of health checks (default 1s); a
	// function is down after FailAfter consecutive failed probes (default
	// 2) and up again after one successful probe.
	ProbeInterval time.Duration
	FailAfter     int
	Log           *slog.Logger
}

// Steerer implements service chains on this host (see package hoststate,
// chain.go): its own loop applies the steering table, ip rules and route
// tables, and health-checks local service functions, reading the agent's
// cached snapshot (Config.Steering). It leaves its state in place when it
// stops, like the main loop. Nothing is applied before the first snapshot.
type Steerer struct {
	cfg  SteerConfig
	log  *slog.Logger
	kick chan struct{}

	mu     sync.Mutex
	probes []netip.Addr       // local functions, from the last computation
	fails  map[netip.Addr]int // consecutive failed probes
}

// NewSteerer checks cfg and fills in its defaults.
func NewSteerer(cfg SteerConfig) (*Steerer, error) {
	if cfg.Host == "" || cfg.Firewall == nil || cfg.Routes == nil {
		return nil, errors.New("steering: Host, Firewall and Routes are required")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
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
	return &Steerer{cfg: cfg, log: cfg.Log.With("host", cfg.Host, "part", "chains"), kick: make(chan struct{}, 1),
		fails: map[netip.Addr]int{}}, nil
}

// run applies steering until ctx ends, reading feed's snapshots.
func (s *Steerer) run(ctx context.Context, feed *follower) {
	var wg sync.WaitGroup
	if s.cfg.Prober != nil {
		wg.Go(func() { s.probeLoop(ctx) })
	}
	s.loop(ctx, feed)
	wg.Wait()
}

func (s *Steerer) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// probeLoop probes the local functions every interval, all in parallel,
// and kicks the loop when one changes state.
func (s *Steerer) probeLoop(ctx context.Context) {
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
		changed := false
		s.mu.Lock()
		for i, ip := range ips {
			before := s.fails[ip] < s.cfg.FailAfter
			if results[i] == nil {
				s.fails[ip] = 0
			} else {
				s.fails[ip]++
			}
			if now := s.fails[ip] < s.cfg.FailAfter; now != before {
				changed = true
				s.log.Warn("service function health changed", "ip", ip, "up", now, "err", results[i])
			}
		}
		s.mu.Unlock()
		if changed {
			s.poke()
		}
	}
}

func (s *Steerer) alive(ip netip.Addr) bool {
	return s.fails[ip] < s.cfg.FailAfter // called with s.mu held
}

func (s *Steerer) loop(ctx context.Context, feed *follower) {
	t := time.NewTicker(s.cfg.Resync)
	defer t.Stop()
	var retry <-chan time.Time
	var lastProblems []string
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
		case <-retry:
		}
		snap, ok := feed.current()
		if !ok {
			continue
		}
		s.mu.Lock()
		st, err := hoststate.ComputeSteering(snap, s.cfg.Host, s.alive)
		if err == nil {
			s.probes = st.Probes
			for ip := range s.fails {
				if !slices.Contains(st.Probes, ip) {
					delete(s.fails, ip)
				}
			}
		}
		s.mu.Unlock()
		if err == nil {
			err = s.apply(ctx, st)
			if !slices.Equal(st.Problems, lastProblems) {
				for _, p := range st.Problems {
					s.log.Warn("chain skipped", "problem", p)
				}
				lastProblems = st.Problems
			}
		}
		if ctx.Err() != nil {
			return
		}
		retry = nil
		if err != nil {
			s.log.Error("apply chain steering", "err", err)
			retry = time.After(time.Second)
		}
	}
}

// apply sets routes and rules first (a marked packet always finds its
// table), then the marking table.
func (s *Steerer) apply(ctx context.Context, st hoststate.Steering) error {
	var errs []error
	if err := s.cfg.Routes.Sync(ctx, st.IPRules, st.Routes); err != nil {
		errs = append(errs, err)
	}
	if _, err := s.cfg.Firewall.Apply(ctx, st); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("steering: %w", err)
	}
	return nil
}

// CleanupSteering removes the steering table, ip rules and chain routes.
func CleanupSteering(ctx context.Context, fw SteerFirewall, routes SteerRoutes) error {
	return errors.Join(fw.Cleanup(ctx), routes.Cleanup(ctx))
}

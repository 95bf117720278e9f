package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
)

// Settled tells callers outside the loop (the CNI plugin serving ADD)
// when this host's firewall enforces what the model says about new
// addresses: the loop's model holds them, and the firewall has applied
// every change since (an address of a pod that an address set lists is in
// that set's nft set). It waits for that state, never for time. The zero
// value is ready to use; give the same one to Config.Settled and to the
// caller.
type Settled struct {
	mu    sync.Mutex
	poke  func() // the loop's, set by Run
	waits map[*settleWait]struct{}
}

type settleWait struct {
	addrs []api.Address
	done  chan struct{}
}

// Wait returns once the loop's model holds every address of addrs (by
// name, with the same IP) and the firewall has applied the model since
// (with no error), or with ctx's error.
func (s *Settled) Wait(ctx context.Context, addrs []api.Address) error {
	w := &settleWait{addrs: addrs, done: make(chan struct{})}
	s.mu.Lock()
	if s.waits == nil {
		s.waits = map[*settleWait]struct{}{}
	}
	s.waits[w] = struct{}{}
	poke := s.poke
	s.mu.Unlock()
	if poke != nil {
		poke() // the loop checks at its next turn
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.waits, w)
		s.mu.Unlock()
		select {
		case <-w.done:
			return nil
		default:
		}
		return fmt.Errorf("wait for this host's firewall to include %s: %w", names(addrs), ctx.Err())
	}
}

// Waiting is the number of callers waiting.
func (s *Settled) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waits)
}

func (s *Settled) setPoke(f func()) {
	s.mu.Lock()
	s.poke = f
	s.mu.Unlock()
}

// release ends the waits whose addresses m holds; the loop calls it only
// when the firewall is in step with m.
func (s *Settled) release(m *model.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.waits {
		if holds(m, w.addrs) {
			close(w.done)
			delete(s.waits, w)
		}
	}
}

// holds reports whether m has every address of addrs, with its IP.
func holds(m *model.Model, addrs []api.Address) bool {
	for _, a := range addrs {
		got, ok := m.Address(a.Name)
		if !ok || got.IP.Unmap() != a.IP.Unmap() {
			return false
		}
	}
	return true
}

func names(addrs []api.Address) string {
	var ips []netip.Addr
	for _, a := range addrs {
		ips = append(ips, a.IP)
	}
	return fmt.Sprint(ips)
}

// settle releases the waits the current state satisfies: the firewall
// applied every change the model brought (nothing left to apply, and its
// last run succeeded).
func (l *loop) settle() {
	s := l.cfg.Settled
	if s == nil || l.m == nil {
		return
	}
	for _, sl := range l.slots {
		if sl.manager == manager(l.firewall) && (sl.dirty&^inRetry != 0 || sl.err != nil) {
			return
		}
	}
	s.release(l.m)
}

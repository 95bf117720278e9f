package cni

import (
	"context"
	"log/slog"
	"sync"
)

// reaper deletes the host veths of deleted attachments in the background.
// Deleting a veth is most of a DEL (about 20 ms: the kernel waits for an
// RCU grace period before the device is gone), and nothing the runtime
// does next needs it gone: the address is released and, without a route,
// the veth carries nothing (a packet from it with the released address is
// dropped by the reverse-path rule once the address routes elsewhere). An
// ADD of the same attachment, whose veth has the same name, waits for the
// deletion first; Wait lets the agent finish deletions before it exits.
type reaper struct {
	mu      sync.Mutex
	pending map[string]chan struct{} // veth -> closed once deleted
	wg      sync.WaitGroup
}

// delete starts deleting veth with del, unless a deletion of veth is in
// flight already (started is false then, and del is not called).
func (r *reaper) delete(veth string, del func(string) error, log *slog.Logger) (started bool) {
	r.mu.Lock()
	if r.pending == nil {
		r.pending = map[string]chan struct{}{}
	}
	if _, ok := r.pending[veth]; ok {
		r.mu.Unlock()
		return false // a DEL of this attachment is deleting it already
	}
	done := make(chan struct{})
	r.pending[veth] = done
	r.mu.Unlock()
	r.wg.Go(func() {
		if err := del(veth); err != nil {
			// Left in place: an ADD of the attachment refuses it until a
			// DEL (the runtime's retry) deletes it; CNI GC finds it too.
			log.Error("delete veth of a deleted attachment", "veth", veth, "err", err)
		}
		r.mu.Lock()
		delete(r.pending, veth)
		r.mu.Unlock()
		close(done)
	})
	return true
}

// wait returns once no deletion of veth is in flight, or when ctx ends.
func (r *reaper) wait(ctx context.Context, veth string) error {
	r.mu.Lock()
	done := r.pending[veth]
	r.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait returns once every deletion started has finished.
func (r *reaper) Wait() { r.wg.Wait() }

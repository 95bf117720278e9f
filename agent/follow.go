package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/romana/romana/api"
)

// follower reads romanad's state for the loop: a snapshot, then the watch
// from its revision+1. It hands over whole revisions only (events up to
// one with RevisionEnd), so the loop never computes from half a
// transaction. When the stream breaks it watches again from the revision
// after the last whole one; only when that revision is compacted (Gone)
// or refused (ahead of the store), or the loop found an event it cannot
// read (restart), does it read a new snapshot. It never blocks on the loop: updates queue here until the loop
// takes them, and notify tells it they are there.
type follower struct {
	src                    Source
	log                    *slog.Logger
	minBackoff, maxBackoff time.Duration
	notify                 func()

	mu     sync.Mutex
	snap   *api.Snapshot // a new snapshot the loop has not taken
	events []api.Event   // whole revisions after it (or after the model)
	// reset asks for a new snapshot; stop ends the current watch.
	reset bool
	stop  context.CancelFunc
}

// take returns what came in since the last call: a snapshot to replace
// the model (or nil) and the events to apply after it.
func (f *follower) take() (*api.Snapshot, []api.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, evs := f.snap, f.events
	f.snap, f.events = nil, nil
	return s, evs
}

// restart drops the events not taken yet and reads a new snapshot.
func (f *follower) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events, f.reset = nil, true
	if f.stop != nil {
		f.stop()
	}
}

func (f *follower) run(ctx context.Context) {
	backoff := f.minBackoff
	grow := func() { backoff = min(2*backoff, f.maxBackoff) }
	var next int64   // the revision to watch from; 0: read a snapshot first
	resumed := false // the stream broke: log when it delivers again
	for ctx.Err() == nil {
		f.mu.Lock()
		if f.reset {
			next, f.reset = 0, false
		}
		f.mu.Unlock()
		if next == 0 {
			snap, err := f.src.Snapshot(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				f.log.Warn("read snapshot from romanad", "err", err, "retryIn", backoff)
				sleep(ctx, backoff)
				grow()
				continue
			}
			f.mu.Lock()
			f.snap, f.events, f.reset = &snap, nil, false // it replaces whatever was asked to be replaced
			f.mu.Unlock()
			f.notify()
			f.log.Info("snapshot read", "revision", snap.Revision, "addresses", len(snap.Addresses))
			next, resumed = snap.Revision+1, false
		}
		wctx, stop := context.WithCancel(ctx)
		f.mu.Lock()
		f.stop = stop
		f.mu.Unlock()
		started := time.Now()
		from := next
		var partial []api.Event // of the revision not yet whole
		err := f.src.Watch(wctx, next, func(ev api.Event) error {
			partial = append(partial, ev)
			if !ev.RevisionEnd {
				return nil
			}
			if resumed {
				f.log.Info("watch resumed", "from", from, "revision", ev.Revision)
				resumed = false
			}
			f.mu.Lock()
			f.events = append(f.events, partial...)
			f.mu.Unlock()
			next, partial = ev.Revision+1, nil
			f.notify()
			return nil
		})
		stop()
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > f.maxBackoff {
			backoff = f.minBackoff // the stream was healthy for a while
		}
		f.mu.Lock()
		reset := f.reset
		f.mu.Unlock()
		switch {
		case reset:
			continue // at once: the loop asked for a snapshot
		case api.ReasonOf(err) == api.ReasonGone:
			f.log.Info("watch revision compacted; reading a new snapshot", "err", err)
			next = 0
		case api.ReasonOf(err) == api.ReasonInvalid:
			// Ahead of the store: romanad's store is another one now.
			f.log.Warn("watch refused; reading a new snapshot", "from", next, "err", err)
			next = 0
		default:
			f.log.Warn("watch ended; watching again", "from", next, "err", err, "retryIn", backoff)
			resumed = true
		}
		sleep(ctx, backoff)
		grow()
	}
}

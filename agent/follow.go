package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/romana/romana/api"
)

// follower keeps one cache of romanad's state current for every loop of
// the agent: snapshot, then watch from its revision+1; when the watch ends
// (revision compacted, romanad restarted, a bad event) it reads a new
// snapshot. It only updates the cache and calls notify (non-blocking kicks);
// the loops read the cache with current.
type follower struct {
	src                    Source
	log                    *slog.Logger
	minBackoff, maxBackoff time.Duration
	notify                 []func()

	mu    sync.Mutex
	cache *cache // nil until the first snapshot
}

func (f *follower) changed() {
	for _, n := range f.notify {
		n()
	}
}

func (f *follower) run(ctx context.Context) {
	backoff := f.minBackoff
	grow := func() { backoff = min(2*backoff, f.maxBackoff) }
	for ctx.Err() == nil {
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
		first := f.cache == nil
		f.cache = newCache(snap)
		f.mu.Unlock()
		f.changed()
		f.log.Info("snapshot read", "revision", snap.Revision, "first", first, "addresses", len(snap.Addresses))

		started := time.Now()
		err = f.src.Watch(ctx, snap.Revision+1, func(ev api.Event) error {
			f.mu.Lock()
			err := f.cache.apply(ev)
			f.mu.Unlock()
			if err != nil {
				return err
			}
			f.changed()
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > f.maxBackoff {
			backoff = f.minBackoff // the stream was healthy for a while
		}
		if api.ReasonOf(err) == api.ReasonGone {
			f.log.Info("watch revision compacted; reading a new snapshot", "err", err)
		} else {
			f.log.Warn("watch ended; reading a new snapshot", "err", err, "retryIn", backoff)
		}
		sleep(ctx, backoff)
		grow()
	}
}

// current returns the cached state, or false before the first snapshot.
func (f *follower) current() (api.Snapshot, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cache == nil {
		return api.Snapshot{}, false
	}
	return f.cache.snapshot(), true
}

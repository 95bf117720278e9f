package feed_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/romana/romana/api"
	"github.com/romana/romana/feed"
)

// fakeStore is a stateful fake of a store's change history, as a Source.
// Revisions are numbered from 1; each either changes the watched range
// (with object events, or none: a claim-only change) or not (a write
// elsewhere in the store). A watch delivers the history from its revision
// in batches of up to chunk revisions (as etcd catches a watch up), then
// each new revision as it comes. compact makes older revisions gone: a
// watch still reading them ends with Gone, like etcd's.
type fakeStore struct {
	chunk int // revisions per batch when catching up

	mu        sync.Mutex
	revs      []fakeRev // revision i+1 at index i
	compacted int64     // revisions before it are gone
	start     int64     // Start's answer; 0: the last revision that changed the range, +1
	startErr  error     // Start fails with it (once)
	changed   chan struct{}
	gate      chan struct{} // while non-nil, Watch waits for it to close
	watches   map[*fakeWatch]struct{}
	opened    int
}

type fakeRev struct {
	inRange bool
	events  []api.Event
}

type fakeWatch struct {
	from int64
	fail chan error
}

func newFakeStore() *fakeStore {
	return &fakeStore{chunk: 1000, changed: make(chan struct{}), watches: map[*fakeWatch]struct{}{}}
}

// put appends a revision with n object events (n 0: a claim-only change)
// and returns its number.
func (f *fakeStore) put(n int) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := int64(len(f.revs) + 1)
	var evs []api.Event
	for i := 0; i < n; i++ {
		evs = append(evs, api.Event{Revision: rev, Type: api.EventPut, Kind: api.KindTenant,
			Name: fmt.Sprintf("r%d.%d", rev, i), RevisionEnd: i == n-1})
	}
	f.revs = append(f.revs, fakeRev{inRange: true, events: evs})
	f.notifyLocked()
	return rev
}

// elsewhere appends a revision that does not change the watched range.
func (f *fakeStore) elsewhere() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revs = append(f.revs, fakeRev{})
	f.notifyLocked()
	return int64(len(f.revs))
}

func (f *fakeStore) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeStore) rev() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.revs))
}

// compact makes every revision before rev gone.
func (f *fakeStore) compact(rev int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compacted = rev
	f.notifyLocked()
}

// failWatches ends every open watch with err, as a store failure does.
func (f *fakeStore) failWatches(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.watches {
		select {
		case w.fail <- err:
		default:
		}
	}
}

// hold makes new watches wait until release.
func (f *fakeStore) hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = make(chan struct{})
}

func (f *fakeStore) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.gate)
	f.gate = nil
}

// open returns the number of open watches and of watches opened ever.
func (f *fakeStore) open() (open, opened int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watches), f.opened
}

// eventsFrom returns every object event from revision from on.
func (f *fakeStore) eventsFrom(from int64) []api.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Event
	for i := max(from, 1) - 1; i < int64(len(f.revs)); i++ {
		out = append(out, f.revs[i].events...)
	}
	return out
}

func (f *fakeStore) Start(ctx context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.startErr; err != nil {
		f.startErr = nil
		return 0, err
	}
	if f.start > 0 {
		return f.start, nil
	}
	for i := len(f.revs) - 1; i >= 0; i-- {
		if f.revs[i].inRange {
			return int64(i + 2), nil
		}
	}
	return 1, nil
}

func (f *fakeStore) Check(ctx context.Context, from int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur := int64(len(f.revs)); from > cur+1 {
		return api.Errorf(api.ReasonInvalid, "revision %d is ahead of the store at %d", from, cur)
	}
	if from < f.compacted {
		return feed.Gone(from)
	}
	return nil
}

func (f *fakeStore) Watch(ctx context.Context, from int64) <-chan feed.Batch {
	out := make(chan feed.Batch)
	w := &fakeWatch{from: from, fail: make(chan error, 1)}
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	go func() {
		defer close(out)
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return
			}
		}
		f.mu.Lock()
		f.watches[w] = struct{}{}
		f.opened++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			delete(f.watches, w)
			f.mu.Unlock()
		}()
		send := func(b feed.Batch) bool {
			select {
			case out <- b:
				return b.Err == nil
			case <-ctx.Done():
				return false
			}
		}
		pos := from // the next revision to look at
		for {
			f.mu.Lock()
			if pos < f.compacted {
				c := f.compacted
				f.mu.Unlock()
				send(feed.Batch{Err: feed.Gone(from), Compacted: c})
				return
			}
			var b feed.Batch
			n := 0
			for ; pos <= int64(len(f.revs)) && n < f.chunk; pos++ {
				r := f.revs[pos-1]
				if r.inRange {
					b.Events = append(b.Events, r.events...)
					b.Through = pos
					n++
				}
			}
			changed := f.changed
			f.mu.Unlock()
			if b.Through > 0 {
				if !send(b) {
					return
				}
				continue
			}
			select {
			case <-changed:
			case err := <-w.fail:
				send(feed.Batch{Err: err})
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

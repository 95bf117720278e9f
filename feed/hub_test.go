package feed_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/feed"
)

// waitFor waits until cond holds (expect.Eventually); the bound is only
// hit by a broken hub.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	expect.Eventually(t, what, 20*time.Second, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}

// run starts h for the test and waits until it knows its history's start.
func run(t *testing.T, h *feed.Hub) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the hub to start", func() bool { return h.Stats().Start > 0 })
}

// reader takes everything a Sub hands out, in the background; stop makes
// it take nothing more.
type reader struct {
	mu      sync.Mutex
	events  []api.Event
	batches int
	resumes int // follow: watches again after a cut-off
	err     error
	stop    chan struct{}
}

func read(t *testing.T, s *feed.Sub) *reader {
	r := &reader{stop: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := drain(s, r.stop, func(b feed.Batch) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, b.Events...)
			r.batches++
		})
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
	}()
	t.Cleanup(func() {
		select {
		case <-r.stop:
		default:
			close(r.stop)
		}
		<-done
		s.Close()
	})
	return r
}

// follow reads from revision from on like an agent: when cut off, it
// watches again from the revision after its last whole one.
func follow(t *testing.T, h *feed.Hub, from int64) *reader {
	r := &reader{stop: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		next := from
		for {
			s, err := h.Subscribe(context.Background(), next)
			if err != nil {
				r.mu.Lock()
				r.err = err
				r.mu.Unlock()
				return
			}
			err = drain(s, r.stop, func(b feed.Batch) {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.events = append(r.events, b.Events...)
				r.batches++
				if n := len(b.Events); n > 0 && b.Events[n-1].RevisionEnd {
					next = b.Events[n-1].Revision + 1
				}
			})
			s.Close()
			if err == nil || api.ReasonOf(err) != api.ReasonUnavailable {
				r.mu.Lock()
				r.err = err
				r.mu.Unlock()
				return
			}
			r.mu.Lock()
			r.resumes++
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(r.stop)
		<-done
	})
	return r
}

// drain hands every batch of s to take until s ends (its error) or stop.
func drain(s *feed.Sub, stop <-chan struct{}, take func(feed.Batch)) error {
	for {
		select {
		case <-stop:
			return nil
		case <-s.Ready():
		}
		for {
			b, ok := s.Next()
			if !ok {
				break
			}
			if b.Err != nil {
				return b.Err
			}
			take(b)
		}
	}
}

func (r *reader) got() ([]api.Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.Event(nil), r.events...), r.err
}

// waitEvents waits until r has n events or an error, and fails on an error.
func (r *reader) waitEvents(t *testing.T, n int) []api.Event {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d events", n), func() bool {
		evs, err := r.got()
		return len(evs) >= n || err != nil
	})
	evs, err := r.got()
	if err != nil {
		t.Fatalf("watch ended after %d of %d events: %v", len(evs), n, err)
	}
	return evs
}

func describe(evs []api.Event) string {
	var b strings.Builder
	for _, e := range evs {
		end := ""
		if e.RevisionEnd {
			end = "!"
		}
		fmt.Fprintf(&b, "%d:%s%s ", e.Revision, e.Name, end)
	}
	return b.String()
}

// same fails unless got is want: the same events, in the same order, with
// the same revision ends.
func same(t *testing.T, what string, got, want []api.Event) {
	t.Helper()
	if g, w := describe(got), describe(want); g != w {
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// TestFanOutExactlyOnce: watchers from random revisions (inside the
// history, before it, at its head, ahead of what the hub has seen), added
// while changes keep coming faster than they read and the history keeps
// dropping its oldest batches, each get every event from their revision on
// exactly once, in order, whole revisions, watching again after a cut-off
// as an agent does; once every catch-up has joined the history, one source
// watch is left open.
func TestFanOutExactlyOnce(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			f := newFakeStore()
			f.chunk = 1 + rng.IntN(30)
			write := func() {
				switch rng.IntN(8) {
				case 0:
					f.elsewhere()
				case 1:
					f.put(0) // claims only
				default:
					f.put(1 + rng.IntN(3))
				}
			}
			for i := 0; i < 300; i++ {
				write()
			}
			// A history of about 40 events: most watchers from before it.
			h := feed.New(f, feed.Options{Backlog: 1 << 20, History: 40 * 140})
			run(t, h)
			type watcher struct {
				from int64
				r    *reader
			}
			var ws []watcher
			for i := 0; i < 600; i++ {
				write()
				if i%10 == 0 {
					from := 1 + rng.Int64N(f.rev()+1)
					ws = append(ws, watcher{from, follow(t, h, from)})
				}
			}
			for _, w := range ws {
				want := f.eventsFrom(w.from)
				same(t, fmt.Sprintf("watcher from %d", w.from), w.r.waitEvents(t, len(want)), want)
			}
			waitFor(t, "the catch-ups to join the history", func() bool {
				open, _ := f.open()
				return open == 1 && h.Stats().CatchingUp == 0
			})
			st := h.Stats()
			if st.CatchUps == 0 || int(st.Watchers) != len(ws) {
				t.Fatalf("stats %+v with %d watchers: want some catch-ups, and all in the history now", st, len(ws))
			}
			resumes := 0
			for _, w := range ws {
				w.r.mu.Lock()
				resumes += w.r.resumes
				w.r.mu.Unlock()
			}
			if uint64(resumes) != st.Cutoffs {
				t.Fatalf("%d resumes, %d cut-offs", resumes, st.Cutoffs)
			}
			t.Logf("%d watchers, %d catch-ups, %d cut off and resumed; history %d..%d (%d bytes)", len(ws), st.CatchUps, st.Cutoffs, st.Start, st.Head, st.HistoryBytes)
		})
	}
}

// TestCatchUpJoinsAtHistoryStart: a watcher from before the history is
// served by its own source watch, which closes once it has delivered the
// change just before the history's start, even when the last changes
// before it are claim-only (no events) and nothing changes afterwards;
// from then on it reads the history, with no gap and no duplicate.
func TestCatchUpJoinsAtHistoryStart(t *testing.T) {
	f := newFakeStore()
	f.chunk = 7
	for i := 0; i < 50; i++ {
		f.put(1)
	}
	for i := 0; i < 5; i++ {
		f.put(0)
	}
	h := feed.New(f, feed.Options{})
	run(t, h)
	if st := h.Stats(); st.Start != 56 {
		t.Fatalf("history starts at %d, want 56", st.Start)
	}
	r := read(t, mustSubscribe(t, h, 10))
	same(t, "caught up", r.waitEvents(t, 41), f.eventsFrom(10))
	waitFor(t, "the catch-up watch to close with nothing new", func() bool {
		open, _ := f.open()
		return open == 1 && h.Stats().CatchingUp == 0
	})
	if st := h.Stats(); st.CatchUps != 1 || st.Watchers != 1 {
		t.Fatalf("stats %+v: want 1 catch-up, now reading the history", st)
	}
	f.put(2)
	f.put(1)
	same(t, "after joining", r.waitEvents(t, 44), f.eventsFrom(10))
	if _, opened := f.open(); opened != 2 {
		t.Fatalf("%d source watches opened, want 2 (the shared one and one catch-up)", opened)
	}
}

func mustSubscribe(t *testing.T, h *feed.Hub, from int64) *feed.Sub {
	t.Helper()
	s, err := h.Subscribe(context.Background(), from)
	if err != nil {
		t.Fatalf("subscribe from %d: %v", from, err)
	}
	return s
}

// TestHistoryWindow: the history keeps its bound by dropping its oldest
// batches, and its start moves to the revision after the last one
// dropped. A watcher from that start is served from memory (no source
// watch opened); one from the revision before it catches up.
func TestHistoryWindow(t *testing.T) {
	f := newFakeStore()
	f.put(1)
	const entry = 64 + 64 + 6 + 5 // an entry of one event named rNN.0: overhead, event, kind, name
	h := feed.New(f, feed.Options{History: 5 * entry})
	run(t, h)
	for i := 0; i < 20; i++ { // one batch each
		rev := f.put(1)
		waitFor(t, "the hub to see the change", func() bool { return h.Stats().Head == rev })
	}
	st := h.Stats()
	if st.Start != f.rev()-4 || st.HistoryBytes != 5*entry {
		t.Fatalf("history %d..%d of %d bytes, want the last 5 revisions (%d..%d), %d bytes", st.Start, st.Head, st.HistoryBytes, f.rev()-4, f.rev(), 5*entry)
	}
	in := read(t, mustSubscribe(t, h, st.Start))
	same(t, "from the history's start", in.waitEvents(t, 5), f.eventsFrom(st.Start))
	if _, opened := f.open(); opened != 1 || h.Stats().CatchUps != 0 {
		t.Fatalf("a watcher from the history's start opened a source watch (%d opened, %d catch-ups)", opened, h.Stats().CatchUps)
	}
	before := read(t, mustSubscribe(t, h, st.Start-1))
	same(t, "from the revision before", before.waitEvents(t, 6), f.eventsFrom(st.Start-1))
	if h.Stats().CatchUps != 1 {
		t.Fatalf("a watcher from before the history did not catch up: %+v", h.Stats())
	}
	f.put(1)
	same(t, "from the history's start, live", in.waitEvents(t, 6), f.eventsFrom(st.Start))
	same(t, "from the revision before, live", before.waitEvents(t, 7), f.eventsFrom(st.Start-1))
}

// TestSlowWatcherIsCutOff: a watcher that stops reading is cut off once it
// is more than the backlog behind, with a resumable error that names the
// revision after the last batch it took, while the others get every
// event; watching again from there gives the rest exactly once. What is
// waiting when a watcher starts, and a single batch however large, are
// offered whole.
func TestSlowWatcherIsCutOff(t *testing.T) {
	f := newFakeStore()
	f.put(1)
	const backlog = 1000 // about 12 events
	h := feed.New(f, feed.Options{Backlog: backlog, History: 1 << 20})
	run(t, h)
	from := f.rev() + 1
	slow := mustSubscribe(t, h, from)
	fast := read(t, mustSubscribe(t, h, from))

	f.put(20) // one batch far over the backlog: offered whole
	waitFor(t, "the hub to see it", func() bool { return h.Stats().Head == f.rev() })
	if n := h.Stats().Cutoffs; n != 0 {
		t.Fatalf("%d cut-offs for a single batch", n)
	}
	<-slow.Ready()
	b, ok := slow.Next()
	if !ok || len(b.Events) != 20 {
		t.Fatalf("slow watcher's first batch: %v %+v", ok, b)
	}
	took := b.Through
	// From here on it reads nothing.
	for i := 0; i < 100; i++ { // one batch each
		rev := f.put(1)
		waitFor(t, "the hub to see the change", func() bool { return h.Stats().Head == rev })
	}
	want := f.eventsFrom(from)
	same(t, "fast watcher", fast.waitEvents(t, len(want)), want)
	if n := h.Stats().Cutoffs; n != 1 {
		t.Fatalf("%d cut-offs, want 1", n)
	}
	b, ok = slow.Next()
	var ae *api.Error
	if !ok || !errors.As(b.Err, &ae) || ae.Reason != api.ReasonUnavailable {
		t.Fatalf("slow watcher: %v %+v, want its Unavailable cut-off", ok, b)
	}
	var resume int64
	if i := strings.Index(ae.Message, "before revision "); i < 0 {
		t.Fatalf("cut-off %q names no revision", ae.Message)
	} else if _, err := fmt.Sscanf(ae.Message[i:], "before revision %d", &resume); err != nil || resume != took+1 {
		t.Fatalf("cut-off %q: resume from %d (%v), want %d", ae.Message, resume, err, took+1)
	}
	if _, ok := slow.Next(); ok {
		t.Fatal("a cut-off watcher had more after its error")
	}
	again := read(t, mustSubscribe(t, h, resume))
	same(t, "resumed", again.waitEvents(t, 100), f.eventsFrom(resume))
	if st := h.Stats(); st.Watchers != 2 {
		t.Fatalf("%d watchers in the history, want 2 (the cut-off one left)", st.Watchers)
	}
}

// TestCatchUpBacklog: a watcher that catches up from far back and reads
// nothing is cut off by its backlog too, and its catch-up watch closes.
func TestCatchUpBacklog(t *testing.T) {
	f := newFakeStore()
	f.chunk = 10
	for i := 0; i < 200; i++ {
		f.put(1)
	}
	h := feed.New(f, feed.Options{Backlog: 2000})
	run(t, h)
	stalled := mustSubscribe(t, h, 1)
	waitFor(t, "the stalled watcher's cut-off", func() bool { return h.Stats().Cutoffs == 1 })
	for {
		b, ok := stalled.Next()
		if !ok {
			t.Fatal("the stalled watcher's batches end without its error")
		}
		if b.Err != nil {
			if api.ReasonOf(b.Err) != api.ReasonUnavailable || !strings.Contains(b.Err.Error(), "before revision 1:") {
				t.Fatalf("stalled watcher: %v, want a cut-off resuming from 1", b.Err)
			}
			break
		}
		t.Fatalf("the stalled watcher was handed %d events after its cut-off", len(b.Events))
	}
	waitFor(t, "the catch-up watch to close", func() bool {
		open, _ := f.open()
		return open == 1 && h.Stats().CatchingUp == 0
	})
}

// TestSharedWatchRestarts: when the shared watch fails, the hub opens it
// again from the revision after the last one it has; changes made while it
// was away come in one batch, and watchers get each exactly once, also
// one from the middle of that batch. A failed Start is retried too.
func TestSharedWatchRestarts(t *testing.T) {
	f := newFakeStore()
	f.put(1)
	f.startErr = api.Errorf(api.ReasonUnavailable, "store unavailable")
	h := feed.New(f, feed.Options{Retry: time.Millisecond})
	run(t, h)
	from := f.rev() + 1
	r := read(t, mustSubscribe(t, h, from))
	for i := 0; i < 10; i++ {
		f.put(2)
	}
	r.waitEvents(t, 20)
	waitFor(t, "the hub to see every change", func() bool { return h.Stats().Head == f.rev() })
	r.mu.Lock()
	before := r.batches
	r.mu.Unlock()

	f.hold()
	f.failWatches(api.Errorf(api.ReasonUnavailable, "store unavailable"))
	waitFor(t, "the shared watch to end", func() bool { return h.Stats().Restarts == 1 })
	var mid int64
	for i := 0; i < 10; i++ {
		if rev := f.put(2); i == 5 {
			mid = rev
		}
	}
	f.release()
	same(t, "across the restart", r.waitEvents(t, 40), f.eventsFrom(from))
	r.mu.Lock()
	batches := r.batches
	r.mu.Unlock()
	if batches != before+1 {
		t.Fatalf("%d batches after the restart, want the 10 revisions made during it in 1", batches-before)
	}
	m := read(t, mustSubscribe(t, h, mid))
	same(t, "from the middle of a batch", m.waitEvents(t, 10), f.eventsFrom(mid))
	if open, opened := f.open(); open != 1 || opened != 2 {
		t.Fatalf("%d source watches open, %d opened; want 1 and 2", open, opened)
	}
	if err := h.Run(context.Background()); err == nil {
		t.Fatal("a second Run of a running hub started")
	}
}

// TestSharedWatchCompacted: when the shared watch comes back to find the
// revisions it missed compacted, the history starts over at the
// compaction revision; watchers that needed a revision before it end with
// Gone, those that did not go on.
func TestSharedWatchCompacted(t *testing.T) {
	f := newFakeStore()
	f.put(1)
	h := feed.New(f, feed.Options{Retry: time.Millisecond})
	run(t, h)
	a := read(t, mustSubscribe(t, h, 2))
	for i := 0; i < 4; i++ {
		f.put(1)
	}
	a.waitEvents(t, 4)
	waitFor(t, "the hub to see every change", func() bool { return h.Stats().Head == 5 })
	f.hold()
	f.failWatches(api.Errorf(api.ReasonUnavailable, "store unavailable"))
	waitFor(t, "the shared watch to end", func() bool { return h.Stats().Restarts == 1 })
	for i := 0; i < 5; i++ {
		f.put(1) // 6..10
	}
	later := read(t, mustSubscribe(t, h, 11)) // ahead of the hub, not of the store
	f.compact(8)
	f.release()
	waitFor(t, "watcher a to end", func() bool { _, err := a.got(); return err != nil })
	if _, err := a.got(); api.ReasonOf(err) != api.ReasonGone {
		t.Fatalf("watcher a needed revision 6 (compacted): %v, want Gone", err)
	}
	waitFor(t, "the history to start over", func() bool { st := h.Stats(); return st.Start == 8 && st.Head == 10 })
	c := read(t, mustSubscribe(t, h, 8))
	same(t, "from the compaction revision", c.waitEvents(t, 3), f.eventsFrom(8))
	if _, err := h.Subscribe(context.Background(), 7); api.ReasonOf(err) != api.ReasonGone {
		t.Fatalf("subscribe from compacted revision 7: %v, want Gone", err)
	}
	f.put(1)
	same(t, "watcher from 11", later.waitEvents(t, 1), f.eventsFrom(11))
}

// TestSubscribeFromNow: revision 0 is the hub's next revision.
func TestSubscribeFromNow(t *testing.T) {
	f := newFakeStore()
	f.put(1)
	h := feed.New(f, feed.Options{})
	run(t, h)
	f.put(1)
	waitFor(t, "the hub to see every change", func() bool { return h.Stats().Head == f.rev() })
	r := read(t, mustSubscribe(t, h, 0))
	f.put(1)
	same(t, "from now", r.waitEvents(t, 1), f.eventsFrom(f.rev()))
}

// TestSubscribeRefuses: a negative, future or compacted revision is an
// error before the watch starts, and no watch is opened for it.
func TestSubscribeRefuses(t *testing.T) {
	f := newFakeStore()
	for i := 0; i < 5; i++ {
		f.put(1)
	}
	f.compact(3)
	h := feed.New(f, feed.Options{})
	run(t, h)
	ctx := context.Background()
	for _, tc := range []struct {
		from   int64
		reason string
	}{{-1, api.ReasonInvalid}, {7, api.ReasonInvalid}, {2, api.ReasonGone}} {
		if _, err := h.Subscribe(ctx, tc.from); api.ReasonOf(err) != tc.reason {
			t.Errorf("subscribe from %d: %v, want %s", tc.from, err, tc.reason)
		}
	}
	if _, opened := f.open(); opened != 1 {
		t.Fatalf("%d source watches opened, want only the shared one", opened)
	}
}

package feed

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/romana/romana/api"
)

// Defaults of Options.
const (
	DefaultBacklog  = 4 << 20
	DefaultRetry    = 100 * time.Millisecond
	DefaultMaxRetry = 5 * time.Second
)

// entryOverhead is what an entry of the history costs besides its batch's
// Size, so that batches without events are bounded too.
const entryOverhead = 64

// Options configures a Hub.
type Options struct {
	// Backlog bounds, in bytes of events (Batch.Size), what one watcher may
	// fall behind (default DefaultBacklog). A watcher that falls further
	// behind is cut off with a resumable Unavailable error. What is there
	// when it starts (a catch-up's first store response, the history from
	// its revision on) is offered whole, however large.
	Backlog int
	// History bounds, in bytes, the recent batches kept in memory (default
	// twice Backlog); the newest batch is always kept. A watcher that has
	// not taken a batch the history drops is cut off too.
	History int
	// Retry is the first delay before the shared watch is opened again
	// after it failed (default DefaultRetry); it doubles up to MaxRetry
	// (default DefaultMaxRetry), and starts over once a watch delivers.
	Retry, MaxRetry time.Duration
	Logger          *slog.Logger
}

// Hub serves any number of watchers from one source watch. Run runs the
// shared watch; Subscribe adds a watcher. Safe for concurrent use.
//
// Invariants (under mu): the history (ring) holds every change from
// revision start through head, in order, in batches of whole revisions;
// the watched range changed at start-1, or start-1 is compacted (see
// Source.Start), so a catch-up watch from before start always reaches it.
// A watcher reads the history with a cursor (no copy per watcher); the
// history never drops a batch a watcher still needs: that watcher is cut
// off first.
type Hub struct {
	src                    Source
	backlog, history       int
	retry, maxRetry        time.Duration
	log                    *slog.Logger
	running                atomic.Bool
	ready                  chan struct{} // closed once start is known
	cutoffs, catchUps      atomic.Uint64
	restarts, catchingUp   atomic.Int64
	historyBytes, watchers atomic.Int64 // for Stats, without mu
	statStart, statHead    atomic.Int64

	mu    sync.Mutex
	ring  []entry // the history, oldest first
	first uint64  // sequence number of ring[0]
	bytes int     // the ring's size: Batch.Size + entryOverhead per entry
	start int64   // the first revision of the history
	head  int64   // the last revision of the history (start-1: none yet)
	end   int64   // bytes of events appended since the hub began (entry.off of the next one)
	subs  map[*Sub]struct{}
}

// entry is one batch of the history.
type entry struct {
	b   Batch
	off int64 // Hub.end before this batch
}

// New returns a Hub over src. Nothing is watched before Run.
func New(src Source, o Options) *Hub {
	if o.Backlog <= 0 {
		o.Backlog = DefaultBacklog
	}
	if o.History <= 0 {
		o.History = 2 * o.Backlog
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.MaxRetry < o.Retry {
		o.MaxRetry = max(DefaultMaxRetry, o.Retry)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Hub{src: src, backlog: o.Backlog, history: o.History, retry: o.Retry, maxRetry: o.MaxRetry,
		log: o.Logger, ready: make(chan struct{}), subs: map[*Sub]struct{}{}}
}

// Stats are counters since the hub was created, and its current state.
type Stats struct {
	// Cutoffs counts watchers cut off for falling behind.
	Cutoffs uint64
	// CatchUps counts watchers that started before the history and were
	// served by a catch-up watch until they reached it.
	CatchUps uint64
	// CatchingUp is the number of catch-up watches open now.
	CatchingUp int64
	// Restarts counts times the shared watch ended and was opened again.
	Restarts int64
	// Watchers is the number of watchers reading the history now.
	Watchers int64
	// HistoryBytes is the size of the history now.
	HistoryBytes int64
	// Start and Head are the first and last revision of the history now
	// (Head is Start-1 while it is empty; both 0 before Run found them).
	Start, Head int64
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{Cutoffs: h.cutoffs.Load(), CatchUps: h.catchUps.Load(), CatchingUp: h.catchingUp.Load(),
		Restarts: h.restarts.Load(), Watchers: h.watchers.Load(), HistoryBytes: h.historyBytes.Load(),
		Start: h.statStart.Load(), Head: h.statHead.Load()}
}

// boundsChangedLocked publishes the history's bounds to Stats.
func (h *Hub) boundsChangedLocked() {
	h.historyBytes.Store(int64(h.bytes))
	h.statStart.Store(h.start)
	h.statHead.Store(h.head)
}

// Run follows the source with one watch until ctx ends, opening it again
// (from the revision after the last one it has) whenever it fails. When
// the store reports the watch's revision compacted, the history starts
// over at the compaction revision, and each watcher that still needed
// changes from before it ends with Gone. Run returns nil when ctx ends,
// and an error at once if the hub is running already.
func (h *Hub) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("feed: the hub is running already")
	}
	defer h.running.Store(false)
	delay := h.retry
	wait := func(err error, from int64) bool {
		h.log.Warn("the shared store watch failed; opening it again", "from", from, "err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, h.maxRetry)
		return true
	}
	for ctx.Err() == nil {
		select {
		case <-h.ready:
		default:
			start, err := h.src.Start(ctx)
			if err != nil {
				if ctx.Err() != nil || !wait(err, 0) {
					return nil
				}
				continue
			}
			h.mu.Lock()
			h.start, h.head = start, start-1
			h.boundsChangedLocked()
			h.mu.Unlock()
			close(h.ready)
			h.log.Debug("watch feed starts", "revision", start)
		}
		h.mu.Lock()
		from := h.head + 1
		h.mu.Unlock()
		var err error
		for b := range h.src.Watch(ctx, from) {
			if b.Err != nil {
				err = b.Err
				if b.Compacted > 0 {
					h.compacted(b.Compacted)
				}
				continue // the channel closes after it
			}
			h.append(b)
			delay = h.retry
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = api.Errorf(api.ReasonUnavailable, "watch: the source closed the stream")
		}
		h.restarts.Add(1)
		if !wait(err, from) {
			return nil
		}
	}
	return nil
}

// append adds a batch of the shared watch to the history, drops the
// oldest batches beyond its bound, and wakes or cuts off each watcher.
func (h *Hub) append(b Batch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b.Through <= h.head {
		return // the watch was opened after head: cannot happen
	}
	size := b.Size()
	h.ring = append(h.ring, entry{b: b, off: h.end})
	h.end += int64(size)
	h.bytes += size + entryOverhead
	h.head = b.Through
	for len(h.ring) > 1 && h.bytes > h.history {
		e := h.ring[0]
		h.ring[0] = entry{}
		h.ring = h.ring[1:]
		h.first++
		h.bytes -= e.b.Size() + entryOverhead
		h.start = e.b.Through + 1
	}
	h.boundsChangedLocked()
	for s := range h.subs {
		if s.seq < h.first && s.want >= h.start {
			// It needed none of the batches dropped (it starts after them).
			s.seq, s.off = h.first, h.ring[0].off
		}
		switch {
		case s.behindLocked() > h.backlog && s.waitingLocked() > 1:
			h.cutLocked(s, h.backlog)
		case s.seq < h.first: // within its backlog, but the history is smaller
			h.cutLocked(s, h.history)
		default:
			s.kick()
		}
	}
}

// compacted starts the history over at rev, the store's compaction
// revision, after the shared watch found it had missed changes before it.
func (h *Hub) compacted(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.log.Warn("the shared store watch's revision was compacted; the watch history starts over", "missed", h.head+1, "compacted", rev)
	h.first += uint64(len(h.ring))
	h.ring, h.bytes = nil, 0
	h.start, h.head = rev, max(h.head, rev-1)
	h.boundsChangedLocked()
	for s := range h.subs {
		if s.want < rev {
			s.endLocked(Gone(s.sent))
			continue
		}
		s.seq, s.off, s.grace = h.first, h.end, h.end
	}
}

// Subscribe adds a watcher of every change from revision from on (0: from
// the hub's next one). Errors before the watch starts come back at once:
// Invalid for a negative revision or one ahead of the store, Gone for a
// compacted one. It waits until Run has found where the history starts.
// A revision inside the history is served from memory; an older one by a
// catch-up watch until it reaches the history. ctx bounds the watch; Close
// the Sub when done.
func (h *Hub) Subscribe(ctx context.Context, from int64) (*Sub, error) {
	if from < 0 {
		return nil, api.Errorf(api.ReasonInvalid, "watch revision %d is negative", from)
	}
	if from > 0 {
		if err := h.src.Check(ctx, from); err != nil {
			return nil, err
		}
	}
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, api.Errorf(api.ReasonUnavailable, "watch: %v before the watch feed started", ctx.Err())
	}
	s := &Sub{h: h, ready: make(chan struct{}, 1), from: from}
	h.mu.Lock()
	if from == 0 {
		from = h.head + 1
	}
	s.sent, s.want = from, from
	if from >= h.start {
		h.joinLocked(s, from)
		h.mu.Unlock()
		return s, nil
	}
	h.mu.Unlock()
	cctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	h.catchUps.Add(1)
	h.catchingUp.Add(1)
	go h.catchUp(cctx, s, from)
	return s, nil
}

// catchUp serves s from its own source watch from revision from until it
// reaches the history, then joins the history where the watch left off.
func (h *Hub) catchUp(ctx context.Context, s *Sub, from int64) {
	defer h.catchingUp.Add(-1)
	defer s.cancel() // closes the catch-up watch
	h.log.Debug("watch catching up from the store", "from", from)
	next := from // s has every change before next
	for b := range h.src.Watch(ctx, from) {
		h.mu.Lock()
		done := h.caughtLocked(s, b, &next)
		h.mu.Unlock()
		if done {
			h.log.Debug("watch caught up", "from", from, "joined", next)
			return
		}
	}
}

// caughtLocked hands one batch of a catch-up watch to s, and joins the
// history when s has every change before its start. It reports whether
// the catch-up is over (joined, or s ended).
func (h *Hub) caughtLocked(s *Sub, b Batch, next *int64) bool {
	if s.over || s.err != nil {
		return true
	}
	if b.Err != nil {
		s.err = b.Err
		s.kick()
		return true
	}
	if b.Through >= *next {
		*next = b.Through + 1
	}
	if len(b.Events) > 0 {
		s.queue = append(s.queue, b)
		s.queued += b.Size()
		if s.behindLocked() > h.backlog && s.waitingLocked() > 1 {
			h.cutLocked(s, h.backlog)
			return true
		}
		s.kick()
	}
	if *next >= h.start {
		h.joinLocked(s, *next)
		return true
	}
	return false
}

// joinLocked makes s read the history from revision from on.
func (h *Hub) joinLocked(s *Sub, from int64) {
	i := sort.Search(len(h.ring), func(i int) bool { return h.ring[i].b.Through >= from })
	s.seq, s.off = h.first+uint64(i), h.end
	if i < len(h.ring) {
		s.off = h.ring[i].off
	}
	s.want, s.grace, s.joined = from, h.end, true
	h.subs[s] = struct{}{}
	h.watchers.Store(int64(len(h.subs)))
	if i < len(h.ring) {
		s.kick()
	}
}

// cutLocked ends s for falling more than limit bytes behind.
func (h *Hub) cutLocked(s *Sub, limit int) {
	h.cutoffs.Add(1)
	h.log.Warn("watch cut off: the watcher fell behind", "from", s.from, "backlog", s.behindLocked(), "limit", limit, "resumeFrom", s.sent)
	s.queue, s.queued = nil, 0
	s.endLocked(cutOff(limit, s.sent))
}

// Sub is one watcher of a Hub. Wait for Ready, then take batches with
// Next; Close it when done.
type Sub struct {
	h      *Hub
	ready  chan struct{} // capacity 1: Next may have something
	cancel context.CancelFunc
	from   int64 // as asked, for logs

	// Guarded by h.mu.
	queue  []Batch // from the catch-up watch, not taken yet
	queued int     // their Size
	joined bool    // reading the history (in h.subs)
	seq    uint64  // the next entry of the history to read
	off    int64   // Hub.end before that entry
	grace  int64   // Hub.end when s joined: what was there is offered whole
	want   int64   // the next revision s needs from the history
	sent   int64   // s was handed every event before this revision
	err    error   // the end, handed out once the queue is taken
	over   bool    // err handed out, or closed
}

// Ready has a value when Next may have a batch. After each Ready, call
// Next until it has nothing.
func (s *Sub) Ready() <-chan struct{} { return s.ready }

func (s *Sub) kick() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Next returns the next batch, if there is one now. A batch with Err is
// the last: the watch is over (cut off for falling behind, Gone, or the
// store's error).
func (s *Sub) Next() (Batch, bool) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := s.nextLocked()
	if ok && s.pendingLocked() {
		s.kick()
	}
	return b, ok
}

func (s *Sub) nextLocked() (Batch, bool) {
	h := s.h
	if s.over {
		return Batch{}, false
	}
	if len(s.queue) > 0 {
		b := s.queue[0]
		s.queue[0] = Batch{}
		s.queue = s.queue[1:]
		s.queued -= b.Size()
		s.sent = max(s.sent, b.Through+1)
		return b, true
	}
	if s.err != nil {
		s.over = true
		return Batch{Err: s.err}, true
	}
	for s.joined && s.seq < h.first+uint64(len(h.ring)) {
		e := h.ring[s.seq-h.first]
		s.seq++
		s.off = e.off + int64(e.b.Size())
		if e.b.Through < s.want {
			continue
		}
		evs := e.b.Events
		if len(evs) > 0 && evs[0].Revision < s.want {
			evs = evs[sort.Search(len(evs), func(i int) bool { return evs[i].Revision >= s.want }):]
		}
		s.want = e.b.Through + 1
		s.sent = max(s.sent, s.want)
		if len(evs) > 0 {
			return Batch{Events: evs, Through: e.b.Through}, true
		}
	}
	return Batch{}, false
}

// pendingLocked reports whether Next may have something.
func (s *Sub) pendingLocked() bool {
	if s.over {
		return false
	}
	return len(s.queue) > 0 || s.err != nil || (s.joined && s.seq < s.h.first+uint64(len(s.h.ring)))
}

// behindLocked is how far s is behind, in bytes of events that came after
// it started: its catch-up batches not taken, and the history after its
// cursor beyond what was there when it joined.
func (s *Sub) behindLocked() int {
	n := s.queued
	if s.joined {
		n += int(s.h.end - max(s.off, s.grace))
	}
	return n
}

// waitingLocked is the number of batches s has not taken.
func (s *Sub) waitingLocked() int {
	n := len(s.queue)
	if s.joined {
		n += int(s.h.first + uint64(len(s.h.ring)) - s.seq)
	}
	return n
}

// endLocked ends s with err (after its queue) and stops its reading the
// history.
func (s *Sub) endLocked(err error) {
	s.err = err
	s.leaveLocked()
	s.kick()
}

func (s *Sub) leaveLocked() {
	if s.joined {
		s.joined = false
		delete(s.h.subs, s)
		s.h.watchers.Store(int64(len(s.h.subs)))
	}
}

// Close ends the watch: its catch-up watch, if any, and its place in the
// history.
func (s *Sub) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.leaveLocked()
	s.over, s.queue, s.queued = true, nil, 0
}

// Package feed fans one ordered stream of store changes out to many
// watchers: one source watch shared by all of them, a bounded history of
// recent batches that a watcher resuming inside it is served from, a
// temporary catch-up watch for a watcher resuming further back, and a
// bounded backlog per watcher, so that a watcher that stops reading costs
// a bounded amount of memory and never holds up the others.
//
// The store is behind Source; the package itself does no I/O.
package feed

import (
	"context"

	"github.com/romana/romana/api"
)

// Batch is the changes of one or more whole store revisions, in order, or
// the error that ends a stream.
//
// Batches handed out by a Hub are shared between its watchers: do not
// modify their events.
type Batch struct {
	// Events are the object events of whole revisions; the last event of
	// each revision has RevisionEnd set.
	Events []api.Event
	// Through is the last store revision the batch covers: every change
	// of the watched range up to it is in this batch or an earlier one.
	// It is at least the revision of the last event, and a batch of
	// changes that are no object events (claim keys) has a Through and no
	// events.
	Through int64
	// Err ends the stream: the source's channel closes after it.
	Err error
	// Compacted is, with an Err of reason Gone, the store's compaction
	// revision: every revision before it is gone.
	Compacted int64
}

// Size is what a batch costs a backlog or the history: its events' bytes
// plus a fixed overhead per event.
func (b Batch) Size() int {
	n := 0
	for _, e := range b.Events {
		n += 64 + len(e.Kind) + len(e.Name) + len(e.Object)
	}
	return n
}

// Source is the store a Hub follows.
type Source interface {
	// Start returns the revision the shared watch starts from, chosen so
	// that the watched range changed at the revision before it (or that
	// revision is compacted): a catch-up watch from any earlier revision
	// that is not compacted then delivers a batch through start-1, which
	// is how it knows it has reached the history.
	Start(ctx context.Context) (int64, error)
	// Check returns the error a watch from revision from (> 0) gets before
	// it starts: Invalid when from is ahead of the store, Gone when it is
	// compacted, or the store's own error.
	Check(ctx context.Context, from int64) error
	// Watch streams the changes of the watched range from revision from on,
	// one batch per store response, as fast as the store delivers them,
	// until ctx ends (the channel closes) or a batch with Err (then it
	// closes). Whole revisions only, never split across batches; batches
	// with no changes are not sent.
	Watch(ctx context.Context, from int64) <-chan Batch
}

// Gone is the error of a watch from a compacted revision.
func Gone(rev int64) error {
	return api.Errorf(api.ReasonGone, "revision %d has been compacted: read a new snapshot and watch from its revision+1", rev)
}

// cutOff is the error that ends a watcher that fell more than limit bytes
// of events behind; it has every event before revision next.
func cutOff(limit int, next int64) error {
	return api.Errorf(api.ReasonUnavailable,
		"watch cut off: the watcher fell more than %d bytes of events behind; it was sent every event before revision %d: watch again from there", limit, next)
}

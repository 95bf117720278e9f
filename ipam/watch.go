package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// Snapshot returns every object at one store revision, read in one request
// (a read-only transaction of one range per kind), leaving out any that does
// not decode. An agent applies it, then watches from Revision+1.
func (r *Registry) Snapshot(ctx context.Context) (api.Snapshot, error) {
	resp, err := r.read(ctx, "read snapshot",
		clientv3.OpGet(r.k.networks(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.hosts(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.tenants(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.segments(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.addresses(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.policies(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.devices(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.chains(), clientv3.WithPrefix()))
	if err != nil {
		return api.Snapshot{}, err
	}
	s := api.Snapshot{
		Revision:  resp.Header.Revision,
		Networks:  decodeList[api.Network](r, rangeKVs(resp, 0)),
		Hosts:     decodeList[api.Host](r, rangeKVs(resp, 1)),
		Tenants:   decodeList[api.Tenant](r, rangeKVs(resp, 2)),
		Segments:  decodeList[api.Segment](r, rangeKVs(resp, 3)),
		Addresses: decodeList[api.Address](r, rangeKVs(resp, 4)),
		Policies:  decodeList[api.Policy](r, rangeKVs(resp, 5)),
		Devices:   decodeList[api.Device](r, rangeKVs(resp, 6)),
		Chains:    decodeList[api.Chain](r, rangeKVs(resp, 7)),
	}
	// Drop slots of networks an interrupted removal left behind.
	live := map[string]bool{}
	for _, n := range s.Networks {
		live[n.Name] = true
	}
	for i := range s.Hosts {
		s.Hosts[i].Slots = slices.DeleteFunc(s.Hosts[i].Slots, func(sl api.HostSlot) bool { return !live[sl.Network] })
	}
	return s, nil
}

// WatchBatch is the events of one or more whole store revisions, or the
// error that ended the watch (then the channel closes).
type WatchBatch struct {
	Events []api.Event
	Err    error
}

// size is what a batch costs the backlog: its events' bytes plus a fixed
// overhead per event.
func (b WatchBatch) size() int {
	n := 0
	for _, e := range b.Events {
		n += 64 + len(e.Kind) + len(e.Name) + len(e.Object)
	}
	return n
}

// Watch streams object changes from revision from (0: from now on) until
// ctx ends. The last event of each revision has RevisionEnd set. A
// compacted revision is an *api.Error with reason Gone, and a revision
// after the store's next one is Invalid, both returned directly; a
// compaction found later is the last batch.
//
// The etcd stream is read as fast as it delivers, whatever the consumer
// does (the etcd client would otherwise buffer it all): what the consumer
// has not taken yet waits in a backlog. When a new etcd response arrives
// while earlier ones are still waiting and together they pass
// Options.WatchBacklog bytes, the watch is cut off: the events not yet
// taken are dropped and the last batch is an Unavailable error naming the
// revision to watch again from (every event before it was handed over).
// One response is always offered whole, however large (etcd packs up to
// 1,000 revisions in one when a watch catches up on old revisions), so
// that a watch resumed far back is not cut off again at once. So a watcher
// that stops reading costs at most the backlog and two etcd responses of
// memory, never the whole change stream.
func (r *Registry) Watch(ctx context.Context, from int64) (<-chan WatchBatch, error) {
	if from < 0 {
		return nil, api.Errorf(api.ReasonInvalid, "watch revision %d is negative", from)
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if from > 0 {
		resp, err := r.cli.Get(ctx, r.k.p+"ping", clientv3.WithCountOnly())
		if err != nil {
			return nil, storeErr("watch", err)
		}
		if cur := resp.Header.Revision; from > cur+1 {
			return nil, api.Errorf(api.ReasonInvalid,
				"watch revision %d is ahead of the store, which is at revision %d (a snapshot of another store?): read a snapshot and watch from its revision+1", from, cur)
		} else if from <= cur {
			_, err := r.cli.Get(ctx, r.k.p+"ping", clientv3.WithRev(from), clientv3.WithCountOnly())
			switch {
			case errors.Is(err, rpctypes.ErrCompacted):
				return nil, gone(from)
			case err != nil:
				return nil, storeErr("watch", err)
			}
		}
		opts = append(opts, clientv3.WithRev(from))
	}
	wctx, cancel := context.WithCancel(ctx)
	wch := r.cli.Watch(wctx, r.k.p, opts...)
	out := make(chan WatchBatch)
	go func() {
		defer close(out)
		defer cancel()
		var (
			queue  []WatchBatch // taken from etcd, not yet by the consumer
			queued int          // bytes in queue
			next   = from       // the consumer has every event before this revision
		)
		taken := func() {
			head := queue[0]
			queue[0] = WatchBatch{}
			queue = queue[1:]
			queued -= head.size()
			if n := len(head.Events); n > 0 {
				next = head.Events[n-1].Revision + 1
			}
		}
		for wch != nil || len(queue) > 0 {
			var sendc chan<- WatchBatch
			var head WatchBatch
			if len(queue) > 0 {
				sendc, head = out, queue[0]
				select { // a consumer that is ready goes first
				case sendc <- head:
					taken()
					continue
				default:
				}
			}
			select {
			case <-ctx.Done():
				return
			case sendc <- head:
				taken()
			case wr, ok := <-wch:
				var b WatchBatch
				switch {
				case !ok:
					if ctx.Err() != nil {
						return
					}
					b.Err = api.Errorf(api.ReasonUnavailable, "watch: the store closed the stream")
				case wr.CompactRevision != 0:
					b.Err = gone(from)
				case wr.Err() != nil:
					b.Err = storeErr("watch", wr.Err())
				default:
					b.Events = r.events(wr.Events)
				}
				if b.Err != nil {
					queue, wch = append(queue, b), nil
					cancel()
					continue
				}
				if len(b.Events) == 0 {
					continue
				}
				queue = append(queue, b)
				queued += b.size()
				// One batch, however large (etcd sends up to a thousand
				// revisions in one response), is always offered: only a
				// consumer that has not taken the batches before it is
				// behind.
				if len(queue) > 1 && queued > r.backlog {
					r.watchCutoffs.Add(1)
					r.log.Warn("watch cut off: the watcher fell behind", "from", from, "backlog", queued, "limit", r.backlog, "resumeFrom", next)
					queue, queued, wch = []WatchBatch{{Err: api.Errorf(api.ReasonUnavailable,
						"watch cut off: the watcher fell more than %d bytes of events behind; it was sent every event before revision %d: watch again from there", r.backlog, next)}}, 0, nil
					cancel()
				}
			}
		}
	}()
	return out, nil
}

// events turns one etcd watch response (whole revisions, in order) into
// object events, marking the last event of each revision.
func (r *Registry) events(evs []*clientv3.Event) []api.Event {
	var out []api.Event
	for _, ev := range evs {
		if e, ok := r.event(ev); ok {
			if n := len(out); n > 0 && out[n-1].Revision != e.Revision {
				out[n-1].RevisionEnd = true
			}
			out = append(out, e)
		}
	}
	if n := len(out); n > 0 {
		out[n-1].RevisionEnd = true
	}
	return out
}

func gone(rev int64) error {
	return api.Errorf(api.ReasonGone, "revision %d has been compacted: read a new snapshot and watch from its revision+1", rev)
}

func (r *Registry) event(ev *clientv3.Event) (api.Event, bool) {
	kind, name, ok := r.k.eventKind(string(ev.Kv.Key))
	if !ok {
		return api.Event{}, false
	}
	e := api.Event{Revision: ev.Kv.ModRevision, Kind: kind, Name: name}
	switch ev.Type {
	case clientv3.EventTypePut:
		e.Type = api.EventPut
		e.Object = json.RawMessage(ev.Kv.Value)
	case clientv3.EventTypeDelete:
		e.Type = api.EventDelete
		if ev.PrevKv != nil {
			e.Object = json.RawMessage(ev.PrevKv.Value)
		}
	}
	return e, true
}

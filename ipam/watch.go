package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/feed"
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
		clientv3.OpGet(r.k.chains(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.addressSets(), clientv3.WithPrefix()))
	if err != nil {
		return api.Snapshot{}, err
	}
	s := api.Snapshot{
		Revision:    resp.Header.Revision,
		Networks:    decodeList[api.Network](r, rangeKVs(resp, 0)),
		Hosts:       decodeList[api.Host](r, rangeKVs(resp, 1)),
		Tenants:     decodeList[api.Tenant](r, rangeKVs(resp, 2)),
		Segments:    decodeList[api.Segment](r, rangeKVs(resp, 3)),
		Addresses:   decodeList[api.Address](r, rangeKVs(resp, 4)),
		Policies:    decodeList[api.Policy](r, rangeKVs(resp, 5)),
		Devices:     decodeList[api.Device](r, rangeKVs(resp, 6)),
		Chains:      decodeList[api.Chain](r, rangeKVs(resp, 7)),
		AddressSets: decodeList[api.AddressSet](r, rangeKVs(resp, 8)),
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

// Watch streams object changes from revision from (0: from now on) until
// ctx ends or the returned Sub is closed; the last event of each revision
// has RevisionEnd set. A negative revision, or one after the store's next
// one, is an *api.Error with reason Invalid, and a compacted one Gone,
// returned directly.
//
// Every watch is served by the registry's feed (RunFeed must be running):
// one etcd watch for all of them, a bounded history of recent batches
// (Options.WatchHistory) that a watch from a revision inside it is served
// from, and for an older revision a temporary etcd watch that closes once
// it reaches the history. A watcher that falls more than
// Options.WatchBacklog bytes of events behind is cut off: its last batch
// is an Unavailable error naming the revision to watch again from (every
// event before it was handed over). What is there when it starts (the
// history from its revision, or the first etcd response of a catch-up,
// up to 1,000 revisions) is offered whole, however large, so that a watch
// resumed far back is not cut off again at once.
func (r *Registry) Watch(ctx context.Context, from int64) (*feed.Sub, error) {
	return r.hub.Subscribe(ctx, from)
}

// RunFeed runs the one etcd watch that every Watch is served from until
// ctx ends, opening it again after store errors. It returns an error at
// once if it runs already.
func (r *Registry) RunFeed(ctx context.Context) error { return r.hub.Run(ctx) }

// source is the registry as the source of its feed: an etcd watch of the
// whole registry prefix, claims included, so that every batch's Through
// is a revision that changed the prefix.
type source struct{ r *Registry }

// Start is the revision after the last one that changed a key that still
// exists under the prefix: the prefix changed there, so a catch-up watch
// from before it sees that change (feed.Source). Deletes after it are
// replayed into the history when the feed starts. With no key at all the
// feed starts at revision 1, and etcd answers with its compaction
// revision if that is gone.
func (s source) Start(ctx context.Context) (int64, error) {
	r := s.r
	resp, err := r.cli.Get(ctx, r.k.p, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return 0, storeErr("start the watch feed", err)
	}
	if len(resp.Kvs) == 0 {
		return 1, nil
	}
	return resp.Kvs[0].ModRevision + 1, nil
}

// Check refuses a watch from a revision ahead of the store's next one
// (Invalid) or compacted (Gone).
func (s source) Check(ctx context.Context, from int64) error {
	r := s.r
	resp, err := r.cli.Get(ctx, r.k.p+"ping", clientv3.WithCountOnly())
	if err != nil {
		return storeErr("watch", err)
	}
	if cur := resp.Header.Revision; from > cur+1 {
		return api.Errorf(api.ReasonInvalid,
			"watch revision %d is ahead of the store, which is at revision %d (a snapshot of another store?): read a snapshot and watch from its revision+1", from, cur)
	} else if from <= cur {
		_, err := r.cli.Get(ctx, r.k.p+"ping", clientv3.WithRev(from), clientv3.WithCountOnly())
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
			return feed.Gone(from)
		case err != nil:
			return storeErr("watch", err)
		}
	}
	return nil
}

// Watch opens an etcd watch of the prefix from revision from and turns
// each response into a batch, read as fast as etcd delivers (the etcd
// client would otherwise buffer without bound): the feed never makes it
// wait.
func (s source) Watch(ctx context.Context, from int64) <-chan feed.Batch {
	r := s.r
	out := make(chan feed.Batch)
	go func() {
		defer close(out)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r.eventWatches.Add(1)
		r.eventWatchesOpened.Add(1)
		defer r.eventWatches.Add(-1)
		wch := r.cli.Watch(wctx, r.k.p, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(from))
		for {
			var b feed.Batch
			select {
			case <-ctx.Done():
				return
			case wr, ok := <-wch:
				switch {
				case !ok:
					if ctx.Err() != nil {
						return
					}
					b.Err = api.Errorf(api.ReasonUnavailable, "watch: the store closed the stream")
				case wr.CompactRevision != 0:
					b.Err, b.Compacted = feed.Gone(from), wr.CompactRevision
				case wr.Err() != nil:
					b.Err = storeErr("watch", wr.Err())
				case len(wr.Events) == 0:
					continue // a progress or created notification
				default:
					b.Events = r.events(wr.Events)
					b.Through = wr.Events[len(wr.Events)-1].Kv.ModRevision
				}
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
			if b.Err != nil {
				return
			}
		}
	}()
	return out
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

// ObjectRevision is the newest revision at which an object that still
// exists changed (0 with no object): a revision every watcher that is up
// to date has reached. A delete after it is not seen (deleted keys have no
// revision left to read); romanad's status follows later changes on the
// feed (server/status.go).
func (r *Registry) ObjectRevision(ctx context.Context) (int64, error) {
	newest := func(prefix string) clientv3.Op {
		return clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	}
	resp, err := r.read(ctx, "read the newest object revision",
		newest(r.k.networks()), newest(r.k.hosts()), newest(r.k.tenants()), newest(r.k.segments()),
		newest(r.k.addresses()), newest(r.k.policies()), newest(r.k.devices()), newest(r.k.chains()),
		newest(r.k.addressSets()))
	if err != nil {
		return 0, err
	}
	var rev int64
	for i := range resp.Responses {
		for _, kv := range rangeKVs(resp, i) {
			rev = max(rev, kv.ModRevision)
		}
	}
	return rev, nil
}

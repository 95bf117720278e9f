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

// WatchBatch is the events of one store revision, or the error that ended
// the watch (then the channel closes).
type WatchBatch struct {
	Events []api.Event
	Err    error
}

// Watch streams object changes from revision from (0: from now on) until
// ctx ends. A compacted revision is an *api.Error with reason Gone, returned
// directly when detected up front, else as the last batch.
func (r *Registry) Watch(ctx context.Context, from int64) (<-chan WatchBatch, error) {
	if from < 0 {
		return nil, api.Errorf(api.ReasonInvalid, "watch revision %d is negative", from)
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if from > 0 {
		_, err := r.cli.Get(ctx, r.k.p+"ping", clientv3.WithRev(from), clientv3.WithCountOnly())
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
			return nil, gone(from)
		case err != nil && !errors.Is(err, rpctypes.ErrFutureRev):
			return nil, storeErr("watch", err)
		}
		opts = append(opts, clientv3.WithRev(from))
	}
	wctx, cancel := context.WithCancel(ctx)
	wch := r.cli.Watch(wctx, r.k.p, opts...)
	out := make(chan WatchBatch, 16)
	go func() {
		defer close(out)
		defer cancel()
		send := func(b WatchBatch) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for wr := range wch {
			if wr.CompactRevision != 0 {
				send(WatchBatch{Err: gone(from)})
				return
			}
			if err := wr.Err(); err != nil {
				send(WatchBatch{Err: storeErr("watch", err)})
				return
			}
			var b WatchBatch
			for _, ev := range wr.Events {
				if e, ok := r.event(ev); ok {
					b.Events = append(b.Events, e)
				}
			}
			if len(b.Events) > 0 && !send(b) {
				return
			}
		}
		if ctx.Err() == nil {
			send(WatchBatch{Err: api.Errorf(api.ReasonUnavailable, "watch: the store closed the stream")})
		}
	}()
	return out, nil
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

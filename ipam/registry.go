// Package ipam is Romana's address registry on etcd v3: networks, hosts and
// their topology slots, tenants, segments, addresses and policies, one key
// per object, with every id and address claimed by an etcd transaction so
// that any number of concurrent allocators (in one or many romanad
// processes) never hand out the same one.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/romana/romana/api"
	"github.com/romana/romana/feed"
)

// DefaultPrefix is the etcd key prefix of all of Romana's keys.
const DefaultPrefix = "/romana/v1/"

// maxAttempts bounds optimistic retries of one operation. Conflicts only
// happen when another writer changed what the operation read, so this is
// reached only under pathological contention.
const maxAttempts = 200

// DefaultWatchBacklog is the default of Options.WatchBacklog.
const DefaultWatchBacklog = 4 << 20

// Options configures a Registry.
type Options struct {
	// Prefix of every key (default DefaultPrefix). Registries sharing an etcd
	// and a prefix share state.
	Prefix string
	Logger *slog.Logger
	// WatchBacklog bounds, in bytes of events, how far one Watch may fall
	// behind the store (default DefaultWatchBacklog). A consumer that falls
	// further behind is cut off with a resumable error.
	WatchBacklog int
	// WatchHistory bounds, in bytes of events, the recent changes kept in
	// memory for watches to start or resume from without an etcd watch of
	// their own (default twice WatchBacklog).
	WatchHistory int
}

// Registry is the IPAM state in etcd. It holds no state of its own besides
// in-process lock stripes that cut contention between its own allocations,
// and the recent changes its watch feed keeps for watchers; correctness
// rests on etcd transactions only. Safe for concurrent use.
type Registry struct {
	cli    *clientv3.Client
	k      keys
	log    *slog.Logger
	stripe [64]sync.Mutex
	hub    *feed.Hub // serves Watch (RunFeed)

	conflicts   atomic.Uint64
	allocations atomic.Uint64
	releases    atomic.Uint64
	undecodable atomic.Uint64

	podWaits                                    atomic.Int64
	eventWatches, revocationWatches             atomic.Int64
	eventWatchesOpened, revocationWatchesOpened atomic.Uint64
}

// New returns a Registry over cli.
func New(cli *clientv3.Client, o Options) *Registry {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.WatchBacklog <= 0 {
		o.WatchBacklog = DefaultWatchBacklog
	}
	r := &Registry{cli: cli, k: keys{o.Prefix}, log: o.Logger}
	r.hub = feed.New(source{r}, feed.Options{Backlog: o.WatchBacklog, History: o.WatchHistory, Logger: o.Logger})
	return r
}

// Prefix returns the key prefix the registry writes under.
func (r *Registry) Prefix() string { return r.k.p }

// Stats are counters since the Registry was created.
type Stats struct {
	// Conflicts counts transactions that lost a race and were retried.
	Conflicts   uint64
	Allocations uint64
	Releases    uint64
	// Undecodable counts stored values that a listing, the snapshot or
	// host placement skipped because they do not decode (each skip counts,
	// so one bad value counts once per listing).
	Undecodable uint64
	// WatchCutoffs counts watches ended because their consumer fell more
	// than Options.WatchBacklog behind.
	WatchCutoffs uint64
	// WatchCatchUps counts watches from a revision older than the watch
	// history, served by an etcd watch of their own until they reached it.
	WatchCatchUps uint64
	// EventWatches is the number of etcd watches of object changes open
	// now: the feed's one, and one per watch catching up;
	// EventWatchesOpened counts them since the start.
	EventWatches       int64
	EventWatchesOpened uint64
	// RevocationWatches is the number of etcd watches of certificate
	// revocations open now (WatchRevoked); RevocationWatchesOpened counts
	// them since the start.
	RevocationWatches       int64
	RevocationWatchesOpened uint64
	// PodWaits is the number of WaitPod calls waiting now for a pod
	// record to appear.
	PodWaits int64
	// Feed is the state of the watch feed.
	Feed feed.Stats
}

// Stats returns the registry's counters.
func (r *Registry) Stats() Stats {
	fs := r.hub.Stats()
	return Stats{Conflicts: r.conflicts.Load(), Allocations: r.allocations.Load(), Releases: r.releases.Load(),
		Undecodable: r.undecodable.Load(), WatchCutoffs: fs.Cutoffs, WatchCatchUps: fs.CatchUps,
		EventWatches: r.eventWatches.Load(), EventWatchesOpened: r.eventWatchesOpened.Load(),
		RevocationWatches: r.revocationWatches.Load(), RevocationWatchesOpened: r.revocationWatchesOpened.Load(),
		PodWaits: r.podWaits.Load(), Feed: fs}
}

// Ping checks that the store answers.
func (r *Registry) Ping(ctx context.Context) error {
	_, err := r.cli.Get(ctx, r.k.p+"ping", clientv3.WithCountOnly())
	return storeErr("ping store", err)
}

// errRetry is returned by an attempt whose transaction lost a race.
var errRetry = errors.New("transaction conflict")

// errAttemptTimeout is returned by an attempt that ran out of its own time
// (see attemptTimeout): it is retried like a conflict, not counted as one.
var errAttemptTimeout = errors.New("attempt timed out")

// retry runs attempt until it returns something other than errRetry or
// errAttemptTimeout.
func (r *Registry) retry(ctx context.Context, op string, attempt func() error) error {
	for i := 0; ; i++ {
		err := attempt()
		if errors.Is(err, errAttemptTimeout) {
			continue
		}
		if !errors.Is(err, errRetry) {
			return err
		}
		r.conflicts.Add(1)
		if i+1 >= maxAttempts {
			return api.Errorf(api.ReasonConflict, "%s: gave up after %d conflicting concurrent updates; try again", op, maxAttempts)
		}
		if i >= 2 {
			d := time.Duration(rand.IntN(1000*min(i, 20))) * time.Microsecond
			select {
			case <-ctx.Done():
				return storeErr(op, ctx.Err())
			case <-time.After(d):
			}
		}
	}
}

// storeErr turns an etcd client error into an API error that says what failed.
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrNoLeader), status.Code(err) == codes.Unavailable,
		status.Code(err) == codes.DeadlineExceeded, etcdCode(err) == codes.Unavailable,
		// etcd answers a read that ran out of its server-side time (a
		// linearizable read while the cluster elects a leader) with its
		// context's error as Unknown; nothing was written.
		status.Code(err) == codes.Unknown && status.Convert(err).Message() == context.DeadlineExceeded.Error():
		return api.Errorf(api.ReasonUnavailable, "%s: store unavailable: %v", op, err)
	}
	return api.Errorf(api.ReasonInternal, "%s: store: %v", op, err)
}

// etcdCode is the gRPC code of an etcd server error as the etcd client
// returns it (an rpctypes.EtcdError, which status.Code does not see): a
// leader change, or a request timed out because the leader failed, is
// Unavailable, and nothing was written.
func etcdCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	return codes.OK
}

// stripeFor returns the in-process lock of an allocation block.
func (r *Registry) stripeFor(s string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(s))
	return &r.stripe[h.Sum32()%uint32(len(r.stripe))]
}

// read runs ops (gets) in one read-only transaction: all at one revision.
func (r *Registry) read(ctx context.Context, op string, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := r.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, storeErr(op, err)
	}
	return resp, nil
}

// commit runs a write transaction and maps a failed compare to errRetry.
func (r *Registry) commit(ctx context.Context, op string, cmps []clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := r.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, storeErr(op, err)
	}
	if !resp.Succeeded {
		return nil, errRetry
	}
	return resp, nil
}

func rangeKVs(resp *clientv3.TxnResponse, i int) []*mvccpb.KeyValue {
	return resp.Responses[i].GetResponseRange().Kvs
}

func oneKV(resp *clientv3.TxnResponse, i int) *mvccpb.KeyValue {
	kvs := rangeKVs(resp, i)
	if len(kvs) == 0 {
		return nil
	}
	return kvs[0]
}

// decode decodes one stored object. A value that does not decode is an
// Internal error naming its key.
func decode[T any](kv *mvccpb.KeyValue) (T, error) {
	var v T
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, api.Errorf(api.ReasonInternal, "the store's value at %s does not decode: %v", kv.Key, err)
	}
	return v, nil
}

// decodeAll decodes every object in kvs, failing on the first that does
// not decode: for decisions that must see every object.
func decodeAll[T any](kvs []*mvccpb.KeyValue) ([]T, error) {
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		v, err := decode[T](kv)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// decodeList decodes the objects in kvs for a listing, leaving out each
// value that does not decode (see skipUndecodable): one bad value must not
// hide every other object.
func decodeList[T any](r *Registry, kvs []*mvccpb.KeyValue) []T {
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		v, err := decode[T](kv)
		if err != nil {
			r.skipUndecodable(kv, err)
			continue
		}
		out = append(out, v)
	}
	return out
}

// skipUndecodable counts and logs a value left out because it does not decode.
func (r *Registry) skipUndecodable(kv *mvccpb.KeyValue, err error) {
	r.undecodable.Add(1)
	r.log.Warn("skipping an undecodable value in the store", "key", string(kv.Key), "err", err)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return string(b)
}

// absent is the compare "key does not exist".
func absent(key string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
}

// unchanged is the compare "key is as read" (kv nil: still absent).
func unchanged(key string, kv *mvccpb.KeyValue) clientv3.Cmp {
	if kv == nil {
		return absent(key)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
}

// emptyPrefix is the compare "no key under prefix".
func emptyPrefix(prefix string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(prefix), "=", 0).WithPrefix()
}

// quietSince is the compare "no key under prefix was written after rev".
func quietSince(prefix string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(prefix), "<", rev+1).WithPrefix()
}

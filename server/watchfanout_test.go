package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/server/servertest"
)

// follower watches like an agent: from a revision, again from the revision
// after its last whole one when cut off, keeping what it got.
type follower struct {
	from    int64
	mu      sync.Mutex
	events  []api.Event
	resumes int
	err     error
}

func follow(ctx context.Context, c *client.Client, from int64) *follower {
	f := &follower{from: from}
	go func() {
		next := from
		for {
			var pending []api.Event // of a revision not yet whole
			err := c.Watch(ctx, next, func(e api.Event) error {
				pending = append(pending, e)
				if e.RevisionEnd {
					f.mu.Lock()
					f.events = append(f.events, pending...)
					f.mu.Unlock()
					pending, next = nil, e.Revision+1
				}
				return nil
			})
			if ctx.Err() != nil {
				return
			}
			f.mu.Lock()
			if api.ReasonOf(err) == api.ReasonUnavailable && strings.Contains(err.Error(), "cut off") {
				f.resumes++
				f.mu.Unlock()
				continue
			}
			f.err = err
			f.mu.Unlock()
			return
		}
	}()
	return f
}

func (f *follower) got() ([]api.Event, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events), f.resumes, f.err
}

// metricValue reads one sample ("name" or "name{labels}", as exposed)
// from a Prometheus text endpoint; ok is false when it is not there.
func metricValue(t *testing.T, hc *http.Client, url, sample string) (float64, bool) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s %s", url, resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == sample {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("scrape %s: %q: %v", url, sc.Text(), err)
			}
			return v, true
		}
	}
	return 0, false
}

// TestWatchFanOut: 50 watch streams from 50 different revisions, half of
// them from before romanad's in-memory watch history (a small one here),
// open at once while changes keep coming; each gets every event from its
// revision on exactly once, in order, and romanad ends with one etcd
// watch of object changes, as etcd itself counts (besides the watch of
// certificate revocations): every other one it opened was a catch-up.
func TestWatchFanOut(t *testing.T) {
	const streams = 50
	e := servertest.StartEtcd(t, nil)
	in := servertest.Start(t, servertest.WithEtcdEndpoints(e.Endpoint),
		servertest.WithRegistryOptions(func(o *ipam.Options) { o.WatchHistory = 16 << 10 }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := in.Client
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if _, err := c.AddTenant(ctx, api.Tenant{Name: fmt.Sprintf("a%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	now, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg := in.Registry()
	expect.Eventually(t, "the watch feed to see every change", 30*time.Second, func() error {
		if h := reg.Stats().Feed.Head; h < now.Revision {
			return fmt.Errorf("feed at revision %d, store at %d", h, now.Revision)
		}
		return nil
	})
	st := reg.Stats()
	if st.EventWatchesOpened != 1 || st.EventWatches != 1 {
		t.Fatalf("before any stream: %d etcd watches of events open, %d opened; want 1 and 1", st.EventWatches, st.EventWatchesOpened)
	}
	// 25 revisions from before the history, 25 inside it (and the next one).
	old, inside := st.Feed.Start-1-snap.Revision, now.Revision+1-st.Feed.Start
	if old < streams/2 || inside < streams/2 {
		t.Fatalf("history %d..%d after revisions %d..%d: want 25 revisions before it and in it", st.Feed.Start, st.Feed.Head, snap.Revision+1, now.Revision)
	}
	var revs []int64
	for i := int64(0); i < streams/2; i++ {
		revs = append(revs, snap.Revision+1+i*old/(streams/2), now.Revision+1-i*inside/(streams/2))
	}
	fs := make([]*follower, 0, streams)
	for _, rev := range revs {
		fs = append(fs, follow(ctx, c, rev))
	}
	for i := 0; i < 200; i++ { // while the streams start and catch up
		if _, err := c.AddTenant(ctx, api.Tenant{Name: fmt.Sprintf("b%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}

	// What each must get: the tenant puts from its revision on, as etcd has them.
	resp, err := in.Etcd().Get(ctx, in.Prefix+"tenants/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(resp.Kvs, func(a, b *mvccpb.KeyValue) int { return int(a.ModRevision - b.ModRevision) })
	describeFrom := func(rev int64) string {
		var b strings.Builder
		for _, kv := range resp.Kvs {
			if kv.ModRevision >= rev {
				fmt.Fprintf(&b, "%d put tenant %s!\n", kv.ModRevision, strings.TrimPrefix(string(kv.Key), in.Prefix+"tenants/"))
			}
		}
		return b.String()
	}
	describeGot := func(evs []api.Event) string {
		var b strings.Builder
		for _, e := range evs {
			end := ""
			if e.RevisionEnd {
				end = "!"
			}
			fmt.Fprintf(&b, "%d %s %s %s%s\n", e.Revision, e.Type, e.Kind, e.Name, end)
		}
		return b.String()
	}
	resumes := 0
	for _, f := range fs {
		want := describeFrom(f.from)
		n := strings.Count(want, "\n")
		expect.Eventually(t, fmt.Sprintf("%d events from revision %d", n, f.from), 60*time.Second, func() error {
			if evs, _, err := f.got(); len(evs) < n && err == nil {
				return fmt.Errorf("%d events so far", len(evs))
			}
			return nil
		})
		evs, r, err := f.got()
		if err != nil {
			t.Fatalf("stream from %d ended: %v", f.from, err)
		}
		if got := describeGot(evs); got != want {
			t.Fatalf("stream from %d:\n got %d events\n%s\nwant %d\n%s", f.from, len(evs), got, n, want)
		}
		resumes += r
	}

	expect.Eventually(t, "the catch-up watches to close", 30*time.Second, func() error {
		if st := reg.Stats(); st.EventWatches != 1 || st.Feed.CatchingUp != 0 {
			return fmt.Errorf("%d etcd watches of events open, %d streams catching up", st.EventWatches, st.Feed.CatchingUp)
		}
		return nil
	})
	st = reg.Stats()
	t.Logf("%d streams: %d caught up from before the history, %d cut off and resumed; etcd watches of events opened %d, open %d",
		streams, st.WatchCatchUps, resumes, st.EventWatchesOpened, st.EventWatches)
	if st.WatchCatchUps < streams/2 || st.EventWatchesOpened != 1+st.WatchCatchUps {
		t.Fatalf("%d catch-ups, %d etcd watches of events opened: want at least %d catch-ups, and no other watch than them and the feed's", st.WatchCatchUps, st.EventWatchesOpened, streams/2)
	}
	if v, ok := metricValue(t, in.HTTP, in.URL+"/metrics", `romanad_etcd_watchers{follows="events"}`); !ok || v != 1 {
		t.Fatalf("romanad_etcd_watchers{follows=\"events\"} = %v (exported: %v), want 1", v, ok)
	}
	// etcd's own count: the feed's watch and the revocations' one.
	var etcdWatchers float64
	expect.Eventually(t, "etcd to count 2 watchers", 30*time.Second, func() error {
		v, ok := metricValue(t, http.DefaultClient, e.Endpoint+"/metrics", "etcd_debugging_mvcc_watcher_total")
		etcdWatchers = v
		if !ok || v != 2 {
			return fmt.Errorf("etcd counts %v (exported: %v)", v, ok)
		}
		return nil
	})
	t.Logf("etcd counts %v watchers with %d streams open", etcdWatchers, streams)
}

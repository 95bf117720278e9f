package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

// TestWatchFutureRevision: a watch from beyond the store's next revision
// (a revision of another store, or a typo) is a 400 at once, not a stream
// that waits for the store to get there.
func TestWatchFutureRevision(t *testing.T) {
	in := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := in.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = in.Client.Watch(ctx, snap.Revision+1000, func(api.Event) error { return errors.New("unexpected event") })
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Reason != api.ReasonInvalid {
		t.Fatalf("watch from revision %d with the store at %d: %v, want 400 Invalid", snap.Revision+1000, snap.Revision, err)
	}
	t.Log(err)
	// The next revision itself is fine: it is where a fresh snapshot's watch starts.
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	if err := in.Client.Watch(wctx, snap.Revision+1, func(api.Event) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("watch from the next revision: %v", err)
	}
}

// TestWatchRevisionEnd: every revision's events end with one marked
// RevisionEnd, also when one revision changes several objects (a network
// added with hosts already there places them all in one transaction).
func TestWatchRevisionEnd(t *testing.T) {
	in := servertest.Start(t)
	ctx := context.Background()
	c := in.Client
	for i := 0; i < 5; i++ {
		if _, err := c.AddHost(ctx, api.Host{Name: fmt.Sprintf("h%d", i), IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), Labels: map[string]string{"rack": "r1"}}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, stop := collect(t, c, snap.Revision+1)
	defer stop()
	if _, err := c.AddNetwork(ctx, rackNetwork); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	evs := next(7) // the network, 5 hosts placed, the tenant
	byRev := map[int64][]api.Event{}
	var revs []int64
	for _, e := range evs {
		if len(byRev[e.Revision]) == 0 {
			revs = append(revs, e.Revision)
		}
		byRev[e.Revision] = append(byRev[e.Revision], e)
	}
	multi := false
	for _, r := range revs {
		es := byRev[r]
		multi = multi || len(es) > 1
		for i, e := range es {
			if e.RevisionEnd != (i == len(es)-1) {
				t.Errorf("revision %d: event %d of %d (%s %s) has RevisionEnd %v", r, i+1, len(es), e.Kind, e.Name, e.RevisionEnd)
			}
		}
	}
	if !multi {
		t.Errorf("no revision with several events: %v", describe(evs))
	}
}

// TestWatchEndsWithError: when romanad shuts down, the stream's last line
// says so, and the client returns it as an Unavailable error instead of a
// bare end of stream.
func TestWatchEndsWithError(t *testing.T) {
	in := servertest.Start(t)
	ctx := context.Background()
	snap, err := in.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		errc <- in.Client.Watch(ctx, snap.Revision+1, func(api.Event) error {
			select {
			case <-started:
			default:
				close(started)
			}
			return nil
		})
	}()
	if _, err := in.Client.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	<-started
	in.Stop()
	select {
	case err := <-errc:
		if api.ReasonOf(err) != api.ReasonUnavailable {
			t.Fatalf("watch ended with %v, want Unavailable (romanad is shutting down)", err)
		}
		t.Log(err)
	case <-time.After(30 * time.Second):
		t.Fatal("watch still open 30s after romanad stopped")
	}
}

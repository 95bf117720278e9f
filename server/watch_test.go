package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/server/servertest"
)

// collect watches from rev in the background; the returned func waits for
// n events (or fails after a generous bound, which only a broken watch hits).
func collect(t *testing.T, c *client.Client, rev int64) (next func(n int) []api.Event, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan api.Event, 1000)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Watch(ctx, rev, func(e api.Event) error { ch <- e; return nil })
	}()
	next = func(n int) []api.Event {
		t.Helper()
		var out []api.Event
		for len(out) < n {
			select {
			case e := <-ch:
				out = append(out, e)
			case err := <-errc:
				t.Fatalf("watch ended after %d of %d events: %v", len(out), n, err)
			case <-time.After(30 * time.Second):
				t.Fatalf("watch: %d of %d events after 30s", len(out), n)
			}
		}
		return out
	}
	return next, cancel
}

func describe(evs []api.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s %s %s", e.Type, e.Kind, e.Name))
	}
	return out
}

func TestWatch(t *testing.T) {
	in := servertest.Start(t, servertest.WithKeepalive(50*time.Millisecond))
	c := in.Client
	ctx := context.Background()
	populate(t, c)
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Networks) != 1 || len(snap.Hosts) != 4 || len(snap.Tenants) != 2 || len(snap.Segments) != 4 || len(snap.Hosts[0].Slots) != 1 {
		t.Fatalf("snapshot: %+v", snap)
	}
	next, stop := collect(t, c, snap.Revision+1)
	defer stop()

	if _, err := c.AddTenant(ctx, api.Tenant{Name: "initech"}); err != nil {
		t.Fatal(err)
	}
	seg, err := c.AddSegment(ctx, api.Segment{Tenant: "initech", Name: "api"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Allocate(ctx, api.AddressRequest{Name: "p1", Host: "h2", Tenant: "initech", Segment: "api", Interface: "veth1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutPolicy(ctx, api.Policy{Name: "allow-web", Direction: []string{"ingress"},
		AppliedTo: []api.Selector{{Tenant: "initech"}}, Rules: []api.Rule{{Protocol: "tcp", Ports: []uint16{80}}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePolicy(ctx, "allow-web"); err != nil {
		t.Fatal(err)
	}
	evs := next(6)
	want := []string{"put tenant initech", "put segment initech/api", "put address p1", "put policy allow-web",
		"delete address p1", "delete policy allow-web"}
	if fmt.Sprint(describe(evs)) != fmt.Sprint(want) {
		t.Fatalf("events %v\nwant %v", describe(evs), want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Revision <= evs[i-1].Revision || evs[0].Revision <= snap.Revision {
			t.Fatalf("revisions not increasing after the snapshot's %d: %v", snap.Revision, evs)
		}
	}
	var gotSeg api.Segment
	if err := json.Unmarshal(evs[1].Object, &gotSeg); err != nil || gotSeg != seg {
		t.Fatalf("segment event object %s, want %+v", evs[1].Object, seg)
	}
	var del api.Address // a delete carries the last value
	if err := json.Unmarshal(evs[4].Object, &del); err != nil || del.IP != a.IP || del.Interface != "veth1" || del.Host != "h2" {
		t.Fatalf("delete event object %s, want %+v", evs[4].Object, a)
	}
	var pol api.Policy
	if err := json.Unmarshal(evs[3].Object, &pol); err != nil || pol.Priority != api.DefaultPriority {
		t.Fatalf("policy event object %s: priority not defaulted", evs[3].Object)
	}

	// Adding a host is one event carrying its slot.
	if _, err := c.AddHost(ctx, api.Host{Name: "h4", IP: netip.MustParseAddr("192.0.2.20"), Labels: map[string]string{"rack": "r2"}}); err != nil {
		t.Fatal(err)
	}
	hev := next(1)[0]
	var h api.Host
	if err := json.Unmarshal(hev.Object, &h); err != nil || hev.Kind != api.KindHost || len(h.Slots) != 1 || h.Slots[0].Loc.String() != "1.2" {
		t.Fatalf("host event %+v (%v)", hev, err)
	}

	// Resume from the segment's revision: the same events again, from there.
	next2, stop2 := collect(t, c, evs[1].Revision)
	defer stop2()
	if got := describe(next2(6)); fmt.Sprint(got) != fmt.Sprint(append(want[1:], "put host h4")) {
		t.Fatalf("resumed events %v", got)
	}

	// An idle stream sends keepalive newlines, and events are flushed one by one.
	resp, err := in.HTTP.Get(in.URL + fmt.Sprintf("/v1/watch?revision=%d", hev.Revision))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("watch Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	line := "\n"
	for line == "\n" { // keepalives may come before etcd delivers the old event
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	var first api.Event
	if err := json.Unmarshal([]byte(line), &first); err != nil || first.Name != "h4" {
		t.Fatalf("first event line %q, %v; want the host event", line, err)
	}
	for i := 0; i < 2; i++ {
		if line, err := br.ReadString('\n'); err != nil || line != "\n" {
			t.Fatalf("keepalive line %q, %v", line, err)
		}
	}

	// Compaction: an old revision is Gone (410), and a fresh snapshot works.
	cur := readStore(t, in).rev
	if _, err := in.Etcd().Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	err = c.Watch(ctx, evs[1].Revision, func(api.Event) error { return errors.New("unexpected event") })
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Reason != api.ReasonGone || ae.Status != http.StatusGone {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	snap2, err := c.Snapshot(ctx)
	if err != nil || snap2.Revision < cur {
		t.Fatalf("snapshot after compaction: rev %d, %v", snap2.Revision, err)
	}
	next3, stop3 := collect(t, c, snap2.Revision+1)
	defer stop3()
	if err := c.RemoveHost(ctx, "h4"); err != nil {
		t.Fatal(err)
	}
	if got := describe(next3(1)); got[0] != "delete host h4" {
		t.Fatalf("after compaction: %v", got)
	}
}

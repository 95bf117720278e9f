package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

// TestAddressSetsCRUDAndWatch: every verb of /v1/addresssets through the
// client, the canonical form stored (unmapped, sorted, distinct), the
// snapshot, and the watch: address-set events reach a watcher, pod
// records' changes (written in between) never do.
func TestAddressSetsCRUDAndWatch(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan api.Event, 64)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Watch(wctx, snap.Revision+1, func(ev api.Event) error { events <- ev; return nil })

	body := `{"name":"web","description":"pods app=web","addresses":["10.0.0.3","::ffff:10.0.0.1","fd00::1","10.0.0.3","10.0.0.2"]}`
	first, _, b1 := rawString(t, in, "PUT", "/v1/addresssets/web", body)
	second, _, b2 := rawString(t, in, "PUT", "/v1/addresssets/web", body)
	if first != http.StatusCreated || second != http.StatusOK || b1 != b2 {
		t.Errorf("PUT address set twice: %d then %d (want 201, 200)\n%s%s", first, second, b1, b2)
	}
	want := api.AddressSet{Name: "web", Description: "pods app=web", Addresses: []netip.Addr{
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("fd00::1")}}
	got, err := c.GetAddressSet(ctx, "web")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("GetAddressSet = %+v, %v; want %+v", got, err, want)
	}
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "ns1", Name: "p1", Tenant: "t", Segment: "s"}); err != nil {
		t.Fatal(err)
	}
	empty, err := c.PutAddressSet(ctx, api.AddressSet{Name: "db"})
	if err != nil || empty.Addresses == nil || len(empty.Addresses) != 0 {
		t.Errorf("PutAddressSet(empty) = %+v, %v; want an empty, non-nil list", empty, err)
	}
	want.Addresses = want.Addresses[1:]
	if out, err := c.PutAddressSet(ctx, want); err != nil || !reflect.DeepEqual(out, want) {
		t.Errorf("replace: %+v, %v", out, err)
	}
	list, err := c.ListAddressSets(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "db" || !reflect.DeepEqual(list[1], want) {
		t.Errorf("ListAddressSets = %+v, %v", list, err)
	}
	snap, err = c.Snapshot(ctx)
	if err != nil || len(snap.AddressSets) != 2 || !reflect.DeepEqual(snap.AddressSets[1], want) {
		t.Errorf("snapshot address sets = %+v, %v", snap.AddressSets, err)
	}
	if st, _, raw := rawString(t, in, "GET", "/v1/snapshot", ""); st != http.StatusOK || strings.Contains(raw, `"p1"`) || strings.Contains(raw, "ns1") {
		t.Errorf("snapshot: %d, and it must not hold pod records: %s", st, raw)
	}
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "ns1", Name: "p2", Tenant: "t", Segment: "s"}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePod(ctx, "ns1", "p1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveAddressSet(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveAddressSet(ctx, "db"); !api.IsNotFound(err) {
		t.Errorf("second remove: %v, want NotFound", err)
	}
	if _, err := c.GetAddressSet(ctx, "db"); !api.IsNotFound(err) {
		t.Errorf("get removed: %v, want NotFound", err)
	}
	// The delete of db is the last write: once its event is in, every
	// earlier change has been streamed.
	var seen []string
	timeout := time.After(10 * time.Second)
	for len(seen) == 0 || seen[len(seen)-1] != "addressset delete db" {
		select {
		case ev := <-events:
			seen = append(seen, ev.Kind+" "+ev.Type+" "+ev.Name)
		case <-timeout:
			t.Fatalf("events so far: %q", seen)
		}
	}
	wantEvents := []string{"addressset put web", "addressset put web", "addressset put db", "addressset put web", "addressset delete db"}
	if !reflect.DeepEqual(seen, wantEvents) {
		t.Errorf("events = %q, want %q (no pod events)", seen, wantEvents)
	}
}

// TestAddressSetScreening: bad input is a 400 that says what is wrong,
// and nothing is stored.
func TestAddressSetScreening(t *testing.T) {
	in := servertest.Start(t)
	many := func(n int, v6 bool) string {
		var b strings.Builder
		b.WriteString(`{"addresses":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			if v6 {
				fmt.Fprintf(&b, `"fd00:1234:5678:9abc:def0:1234:%x:%x"`, i>>16, i&0xffff)
			} else {
				fmt.Fprintf(&b, `"10.%d.%d.%d"`, i>>16, (i>>8)&0xff, i&0xff)
			}
		}
		b.WriteString(`]}`)
		return b.String()
	}
	for _, tc := range []struct{ name, path, body, want string }{
		{"bad name", "/v1/addresssets/Web_Pods", `{"addresses":[]}`, `invalid address set name "Web_Pods"`},
		{"path and body differ", "/v1/addresssets/web", `{"name":"db","addresses":[]}`, `address set body is named "db" but the path names "web"`},
		{"not an address", "/v1/addresssets/web", `{"addresses":["10.0.0.300"]}`, `10.0.0.300`},
		{"a prefix", "/v1/addresssets/web", `{"addresses":["10.0.0.0/24"]}`, `10.0.0.0/24`},
		{"empty address", "/v1/addresssets/web", `{"addresses":[""]}`, `addresses[0] is missing`},
		{"zone", "/v1/addresssets/web", `{"addresses":["10.0.0.1","fe80::1%eth0"]}`, `addresses[1] fe80::1%eth0 has a zone`},
		{"unknown field", "/v1/addresssets/web", `{"addresses":[],"members":[]}`, `unknown field "members"`},
		{"description", "/v1/addresssets/web", `{"description":"` + strings.Repeat("x", 1025) + `","addresses":[]}`, `description longer than 1024`},
		{"too many", "/v1/addresssets/web", many(65537, false), `has 65537 addresses; a set holds at most 65536`},
		{"too large to store", "/v1/addresssets/web", many(65536, true), `encodes to`},
	} {
		st, ae, body := rawString(t, in, "PUT", tc.path, tc.body)
		if st != http.StatusBadRequest || ae == nil || ae.Reason != api.ReasonInvalid || !strings.Contains(ae.Message, tc.want) {
			if len(body) > 300 {
				body = body[:300]
			}
			t.Errorf("%s: %d %s; want 400 mentioning %q", tc.name, st, body, tc.want)
		}
	}
	if list, err := in.Client.ListAddressSets(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("invalid sets were stored: %+v %v", list, err)
	}
	// The largest set of IPv4 addresses is accepted.
	st, ae, _ := rawString(t, in, "PUT", "/v1/addresssets/big", many(65536, false))
	if st != http.StatusCreated {
		t.Fatalf("65536 IPv4 addresses: %d %+v", st, ae)
	}
	big, err := in.Client.GetAddressSet(context.Background(), "big")
	if err != nil || len(big.Addresses) != 65536 {
		t.Errorf("big set: %d addresses, %v", len(big.Addresses), err)
	}
}

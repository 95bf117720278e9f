package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

func fabricDevices() []api.Device {
	l := func(peer, local, remote string) api.DeviceLink {
		dl := api.DeviceLink{Peer: peer, Local: netip.MustParsePrefix(local)}
		if remote != "" {
			dl.Remote = netip.MustParseAddr(remote)
		}
		return dl
	}
	return []api.Device{
		{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65101,
			RouterID: netip.MustParseAddr("172.31.255.1"),
			Links:    []api.DeviceLink{l("", "192.0.2.1/24", ""), l("spine1", "172.16.0.1/31", "172.16.0.0")}},
		{Name: "tor2", Kind: api.DeviceToR, Group: map[string]string{"rack": "r2"}, ASN: 65102,
			Links: []api.DeviceLink{l("", "192.0.2.2/24", ""), l("spine1", "172.16.0.3/31", "172.16.0.2")}},
		{Name: "spine1", Kind: api.DeviceSpine, ASN: 65100},
	}
}

func TestDevicesCRUDAndWatch(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan api.Event, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Watch(wctx, snap.Revision+1, func(ev api.Event) error { events <- ev; return nil })

	devs := fabricDevices()
	body := `{"name":"tor1","kind":"tor","group":{"rack":"r1"},"asn":65101,"routerId":"172.31.255.1",` +
		`"links":[{"local":"192.0.2.1/24"},{"peer":"spine1","local":"172.16.0.1/31","remote":"172.16.0.0"}]}`
	first, _, b1 := rawString(t, in, "POST", "/v1/devices", body)
	second, _, b2 := rawString(t, in, "POST", "/v1/devices", body)
	if first != http.StatusCreated || second != http.StatusOK || b1 != b2 {
		t.Errorf("POST device twice: %d then %d (want 201, 200)\n%s%s", first, second, b1, b2)
	}
	got, err := c.GetDevice(ctx, "tor1")
	if err != nil || !reflect.DeepEqual(got, devs[0]) {
		t.Errorf("GetDevice = %+v, %v; want %+v", got, err, devs[0])
	}
	for _, d := range devs[1:] {
		if _, err := c.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	list, err := c.ListDevices(ctx)
	if err != nil || len(list) != 3 || list[0].Name != "spine1" || list[2].Name != "tor2" {
		t.Errorf("ListDevices = %+v, %v", list, err)
	}
	snap, err = c.Snapshot(ctx)
	if err != nil || len(snap.Devices) != 3 {
		t.Errorf("snapshot devices = %+v, %v", snap.Devices, err)
	}
	if err := c.RemoveDevice(ctx, "tor2"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveDevice(ctx, "tor2"); !api.IsNotFound(err) {
		t.Errorf("second remove: %v, want NotFound", err)
	}
	if _, err := c.GetDevice(ctx, "tor2"); !api.IsNotFound(err) {
		t.Errorf("get removed: %v, want NotFound", err)
	}
	var seen []string
	timeout := time.After(10 * time.Second)
	for len(seen) < 5 {
		select {
		case ev := <-events:
			if ev.Kind == api.KindDevice {
				seen = append(seen, ev.Type+" "+ev.Name)
			}
		case <-timeout:
			t.Fatalf("device events so far: %q", seen)
		}
	}
	want := []string{"put tor1", "put tor1", "put tor2", "put spine1", "delete tor2"}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("device events = %q, want %q", seen, want)
	}
}

func TestDeviceValidation(t *testing.T) {
	in := servertest.Start(t)
	for _, tc := range []struct{ body, want string }{
		{`{"name":"tor1","kind":"leaf"}`, `kind "leaf"`},
		{`{"name":"tor1","kind":"tor"}`, `a top-of-rack needs a group`},
		{`{"name":"s1","kind":"spine","group":{"rack":"r1"}}`, `a spine serves no group`},
		{`{"name":"s1","kind":"spine","links":[{"local":"192.0.2.1/24"}]}`, `only a top-of-rack has host links`},
		{`{"name":"t1","kind":"tor","group":{"rack":"r1"},"links":[{"peer":"s1","local":"172.16.0.1/31","remote":"172.16.0.9"}]}`, `remote 172.16.0.9 is not another address`},
		{`{"name":"t1","kind":"tor","group":{"rack":"r1"},"links":[{"peer":"s1","local":"172.16.0.1/32"}]}`, `give the link's prefix length`},
		{`{"name":"t1","kind":"tor","group":{"rack":"r1"},"links":[{"peer":"t1","local":"172.16.0.1/31"}]}`, `cannot link to itself`},
		{`{"name":"T1","kind":"spine"}`, `invalid device name "T1"`},
		{`{"name":"t1","kind":"spine","color":"red"}`, `unknown field "color"`},
	} {
		st, ae, body := rawString(t, in, "POST", "/v1/devices", tc.body)
		if st != http.StatusBadRequest || ae == nil || !strings.Contains(ae.Message, tc.want) {
			t.Errorf("POST %s: %d %s; want 400 mentioning %q", tc.body, st, body, tc.want)
		}
	}
	if list, err := in.Client.ListDevices(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("invalid devices were stored: %+v %v", list, err)
	}
}

func TestFabricRoutesEndpoint(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	populate(t, c) // h0, h1 in rack r1; h2, h3 in rack r2; network blue: rack 1 | host 3 | tenant 4 | segment 4
	for _, d := range fabricDevices() {
		if _, err := c.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	tor, err := c.FabricRoutes(ctx, "tor1")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range tor.Routes {
		lines = append(lines, r.Dst.String()+" "+r.Via[0].String()+" "+r.Note)
	}
	want := []string{"10.0.0.0/8 172.16.0.0 pool blue via spine1", "10.0.0.0/12 192.0.2.10 host h0", "10.16.0.0/12 192.0.2.11 host h1"}
	if !reflect.DeepEqual(lines, want) || len(tor.Problems) > 0 || !reflect.DeepEqual(tor.Announce, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/9")}) {
		t.Errorf("tor1 routes:\n%q\nwant\n%q\nannounce %v problems %q", lines, want, tor.Announce, tor.Problems)
	}
	resp, err := in.HTTP.Get(in.URL + "/v1/fabric/routes?device=spine1&format=bird")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantText := "route 10.0.0.0/9 via 172.16.0.1; # rack=r1 via tor1\n\troute 10.128.0.0/9 via 172.16.0.3; # rack=r2 via tor2\n"
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(string(b), wantText) {
		t.Errorf("spine1 bird: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	for _, tc := range []struct {
		query string
		code  int
		want  string
	}{
		{"", http.StatusBadRequest, "give ?device=NAME"},
		{"?device=nope", http.StatusNotFound, "device nope not found"},
		{"?device=tor1&format=cisco", http.StatusBadRequest, `format "cisco"`},
	} {
		st, ae, body := rawString(t, in, "GET", "/v1/fabric/routes"+tc.query, "")
		if st != tc.code || ae == nil || !strings.Contains(ae.Message, tc.want) {
			t.Errorf("GET %s: %d %s; want %d mentioning %q", tc.query, st, body, tc.code, tc.want)
		}
	}
	var ae *api.Error
	if _, err := c.FabricRoutes(ctx, "nope"); !errors.As(err, &ae) || ae.Reason != api.ReasonNotFound {
		t.Errorf("client: %v", err)
	}
}

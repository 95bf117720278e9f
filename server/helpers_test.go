package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// rackNetwork has a rack level: 2 racks of 8 hosts, 16 tenants of 16
// segments, 4094 endpoints per segment per host.
var rackNetwork = api.Network{Name: "blue", CIDR: "10.0.0.0/8", Fields: []plan.Field{
	{Name: "rack", Bits: 1}, {Name: "host", Bits: 3}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}

type world struct {
	prefix   string // of request names
	hosts    []string
	segments [][2]string // tenant, segment
}

// populate creates rackNetwork, hosts h0..h3 (h0, h1 in rack r1; h2, h3 in
// rack r2), tenants acme and globex with segments web and db each.
func populate(t testing.TB, c *client.Client) world {
	t.Helper()
	ctx := context.Background()
	if _, err := c.AddNetwork(ctx, rackNetwork); err != nil {
		t.Fatal(err)
	}
	var w world
	for i := 0; i < 4; i++ {
		name := fmt.Sprintf("h%d", i)
		rack := "r1"
		if i >= 2 {
			rack = "r2"
		}
		h := api.Host{Name: name, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), Labels: map[string]string{"rack": rack}}
		if _, err := c.AddHost(ctx, h); err != nil {
			t.Fatal(err)
		}
		w.hosts = append(w.hosts, name)
	}
	for _, tn := range []string{"acme", "globex"} {
		if _, err := c.AddTenant(ctx, api.Tenant{Name: tn}); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"web", "db"} {
			if _, err := c.AddSegment(ctx, api.Segment{Tenant: tn, Name: s}); err != nil {
				t.Fatal(err)
			}
			w.segments = append(w.segments, [2]string{tn, s})
		}
	}
	return w
}

// request returns the i-th of a spread of requests over every host and segment.
func (w world) request(i int) api.AddressRequest {
	s := w.segments[(i/len(w.hosts))%len(w.segments)]
	return api.AddressRequest{Name: fmt.Sprintf("%spod-%04d:eth0", w.prefix, i), Host: w.hosts[i%len(w.hosts)], Tenant: s[0], Segment: s[1]}
}

// allocateConcurrently allocates n addresses from workers goroutines that
// take turns over clients, and returns them by request name.
func allocateConcurrently(t testing.TB, clients []*client.Client, w world, n, workers int) map[string]api.Address {
	t.Helper()
	ctx := context.Background()
	jobs := make(chan int)
	var mu sync.Mutex
	got := map[string]api.Address{}
	var errs []error
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		c := clients[k%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				req := w.request(i)
				a, err := c.Allocate(ctx, req)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("allocate %s: %w", req.Name, err))
				} else {
					got[req.Name] = a
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return got
}

// checkAllocations asserts that the addresses are distinct, dense from the
// first endpoint in each segment block, and that each decodes (with package
// plan and through /v1/decode) to the host, tenant and segment requested.
func checkAllocations(t testing.TB, c *client.Client, w world, n int, got map[string]api.Address) {
	t.Helper()
	ctx := context.Background()
	if len(got) < n {
		t.Fatalf("%d addresses, want %d", len(got), n)
	}
	nw, err := c.GetNetwork(ctx, rackNetwork.Name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Parse(nw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]api.Host{}
	for _, h := range w.hosts {
		if hosts[h], err = c.GetHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	tenantIDs, segmentIDs := map[string]uint64{}, map[[2]string]uint64{}
	for _, s := range w.segments {
		tn, err := c.GetTenant(ctx, s[0])
		if err != nil {
			t.Fatal(err)
		}
		sg, err := c.GetSegment(ctx, s[0], s[1])
		if err != nil {
			t.Fatal(err)
		}
		tenantIDs[s[0]], segmentIDs[s] = tn.ID, sg.ID
	}
	byIP := map[netip.Addr]string{}
	for name, a := range got {
		if other, dup := byIP[a.IP]; dup {
			t.Fatalf("%s handed out twice: to %s and %s", a.IP, other, name)
		}
		byIP[a.IP] = name
	}
	perBlock := map[string][]uint64{}
	for i := 0; i < n; i++ {
		req := w.request(i)
		a, ok := got[req.Name]
		if !ok {
			t.Fatalf("no address for %s", req.Name)
		}
		if a.Name != req.Name || a.Host != req.Host || a.Tenant != req.Tenant || a.Segment != req.Segment || a.Network != nw.Name {
			t.Fatalf("request %+v got %+v", req, a)
		}
		d, err := p.Decode(a.IP)
		if err != nil {
			t.Fatal(err)
		}
		slot := hosts[req.Host].Slots[0]
		if !reflect.DeepEqual(d.Loc, slot.Loc) || d.Tenant != tenantIDs[req.Tenant] || d.Segment != segmentIDs[[2]string{req.Tenant, req.Segment}] {
			t.Fatalf("%s decodes to %+v; want host %s at %v, tenant id %d, segment id %d", a.IP, d, req.Host, slot.Loc,
				tenantIDs[req.Tenant], segmentIDs[[2]string{req.Tenant, req.Segment}])
		}
		if !slot.CIDR.Contains(a.IP) {
			t.Fatalf("%s is outside host %s's block %s", a.IP, req.Host, slot.CIDR)
		}
		dd, err := c.Decode(ctx, a.IP)
		if err != nil {
			t.Fatal(err)
		}
		if dd.Host != req.Host || dd.Tenant != req.Tenant || dd.Segment != req.Segment || dd.Allocation != req.Name || dd.Network != nw.Name {
			t.Fatalf("/v1/decode %s = %+v, want %+v", a.IP, dd, req)
		}
	}
	// Smallest free first: each block holds endpoints 1..k with no gaps.
	for _, a := range got {
		d, err := p.Decode(a.IP)
		if err != nil {
			t.Fatal(err)
		}
		key := a.Host + "/" + a.Tenant + "/" + a.Segment
		perBlock[key] = append(perBlock[key], d.Endpoint)
	}
	for key, eps := range perBlock {
		seen := map[uint64]bool{}
		for _, e := range eps {
			seen[e] = true
		}
		for e := uint64(1); e <= uint64(len(eps)); e++ {
			if !seen[e] {
				t.Fatalf("block %s: endpoints %v are not 1..%d", key, eps, len(eps))
			}
		}
	}
}

// storeState is every key and value under the instance's prefix, and the revision.
type storeState struct {
	rev int64
	kvs map[string]string
}

func readStore(t testing.TB, in *servertest.Instance) storeState {
	t.Helper()
	resp, err := in.Etcd().Get(context.Background(), in.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	s := storeState{rev: resp.Header.Revision, kvs: map[string]string{}}
	for _, kv := range resp.Kvs {
		s.kvs[string(kv.Key)] = string(kv.Value)
	}
	return s
}

func (s storeState) equal(o storeState) bool { return s.rev == o.rev && maps.Equal(s.kvs, o.kvs) }

// countPrefix counts keys under in.Prefix+sub.
func countPrefix(t testing.TB, in *servertest.Instance, sub string) int64 {
	t.Helper()
	resp, err := in.Etcd().Get(context.Background(), in.Prefix+sub, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// raw sends a request with a literal body and returns the status, the
// decoded error (if any) and the body.
func raw(t testing.TB, in *servertest.Instance, method, path string, body io.Reader, contentLength int64) (int, *api.Error, string) {
	t.Helper()
	url := in.URL + path
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentLength != 0 {
		req.ContentLength = contentLength
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := in.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb api.ErrorBody
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error == nil {
			t.Fatalf("%s %s: status %d with a body that is not a JSON error: %q", method, url, resp.StatusCode, b)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: error Content-Type %q", method, url, ct)
		}
	}
	return resp.StatusCode, eb.Error, string(b)
}

func rawString(t testing.TB, in *servertest.Instance, method, path, body string) (int, *api.Error, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return raw(t, in, method, path, r, 0)
}

package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/romana/romana/access"
	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// BenchmarkAPIAuth measures what TLS and authorization cost per request,
// side by side on one romanad (embedded store with fsync, as in
// production). Allocations (B/op, allocs/op) count the whole process:
// client, romanad and etcd.
//
//	whoami/unix           GET /v1/whoami over the unix socket: no TLS, admin by the socket's mode
//	whoami/tls-keepalive  over TLS on a kept-alive connection: the client certificate is
//	                      verified, looked up in the revocation set and authorized per request
//	whoami/tls-handshake  over TLS with a new connection and a full handshake per request
//	decide                access.Decide alone (the table lookup)
//	allocate/...          allocations/s with 64 concurrent clients (each its own connection),
//	                      over the unix socket and over TLS, alternating A-B-B-A so that drift
//	                      in the store shows as a difference between -a and -b
func BenchmarkAPIAuth(b *testing.B) {
	ctx := context.Background()
	in := servertest.Start(b, servertest.WithFsync())
	admin := in.Credential(b, pki.Admin)

	unixHTTP := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", in.Socket)
	}}}
	tlsHTTP := in.HTTPClient(b, admin)
	handshakeHTTP := in.HTTPClient(b, admin)
	handshakeHTTP.Transport.(*http.Transport).DisableKeepAlives = true
	for _, w := range []struct {
		name, base string
		hc         *http.Client
	}{
		{"unix", "http://unix", unixHTTP},
		{"tls-keepalive", in.URL, tlsHTTP},
		{"tls-handshake", in.URL, handshakeHTTP},
	} {
		b.Run("whoami/"+w.name, func(b *testing.B) {
			getOK(b, w.hc, w.base+"/v1/whoami") // connect outside the timing
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				getOK(b, w.hc, w.base+"/v1/whoami")
			}
		})
	}
	b.Run("decide", func(b *testing.B) {
		id := pki.Host("h1")
		b.ReportAllocs()
		for range b.N {
			if d := access.Decide(id, "DELETE /v1/addresses/{name}"); !d.Allowed {
				b.Fatal(d.Message)
			}
		}
	})

	blocks := allocBlocks(b, in)
	const clients = 64
	unixClients, tlsClients := make([]*client.Client, clients), make([]*client.Client, clients)
	for i := range clients {
		var err error
		if unixClients[i], err = client.New("unix://" + in.Socket); err != nil {
			b.Fatal(err)
		}
		if tlsClients[i], _, err = client.FromCredential(admin, in.URL); err != nil {
			b.Fatal(err)
		}
		for _, c := range []*client.Client{unixClients[i], tlsClients[i]} {
			if _, err := c.WhoAmI(ctx); err != nil { // connect (and handshake) outside the timing
				b.Fatal(err)
			}
		}
	}
	var seq atomic.Int64
	for _, run := range []struct {
		name string
		cs   []*client.Client
	}{{"unix-a", unixClients}, {"tls-a", tlsClients}, {"tls-b", tlsClients}, {"unix-b", unixClients}} {
		b.Run("allocate/"+run.name, func(b *testing.B) {
			allocateWith(b, run.cs, blocks, &seq)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
		})
	}
}

func getOK(b *testing.B, hc *http.Client, url string) {
	resp, err := hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s", url, resp.Status)
	}
}

// allocBlocks makes 8 hosts with 2 tenants of 4 segments and returns the
// 64 (host, tenant, segment) blocks.
func allocBlocks(b *testing.B, in *servertest.Instance) [][3]string {
	ctx := context.Background()
	c := in.Client
	if _, err := c.AddNetwork(ctx, api.Network{Name: "bench", CIDR: "10.0.0.0/8", Fields: []plan.Field{
		{Name: "host", Bits: 4}, {Name: "tenant", Bits: 2}, {Name: "segment", Bits: 2}}}); err != nil {
		b.Fatal(err)
	}
	var blocks [][3]string
	for h := range 8 {
		host := fmt.Sprintf("h%d", h)
		if _, err := c.AddHost(ctx, api.Host{Name: host, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(h + 1)})}); err != nil {
			b.Fatal(err)
		}
		for t := range 2 {
			tenant := fmt.Sprintf("t%d", t)
			if _, err := c.AddTenant(ctx, api.Tenant{Name: tenant}); err != nil {
				b.Fatal(err)
			}
			for s := range 4 {
				seg := fmt.Sprintf("s%d", s)
				if _, err := c.AddSegment(ctx, api.Segment{Tenant: tenant, Name: seg}); err != nil {
					b.Fatal(err)
				}
				blocks = append(blocks, [3]string{host, tenant, seg})
			}
		}
	}
	return blocks
}

// allocateWith allocates b.N addresses spread over blocks, one worker per
// client.
func allocateWith(b *testing.B, cs []*client.Client, blocks [][3]string, seq *atomic.Int64) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	b.ResetTimer()
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				i := seq.Add(1)
				blk := blocks[int(i)%len(blocks)]
				if _, err := c.Allocate(ctx, api.AddressRequest{Name: fmt.Sprintf("pod-%d", i), Host: blk[0], Tenant: blk[1], Segment: blk[2]}); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

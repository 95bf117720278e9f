package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

// TestConnectionReused: consecutive calls go over one connection, also
// when the response is large enough to be sent chunked (romanad encodes
// with json.Encoder, whose trailing newline a json.Decoder leaves unread:
// a body not read to its end makes the transport close the connection,
// and over TLS every call would pay a new handshake).
func TestConnectionReused(t *testing.T) {
	for _, hosts := range []int{1, 200} {
		t.Run(fmt.Sprintf("hosts=%d", hosts), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "r.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			var conns atomic.Int64
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					st := api.Status{StoreRevision: 7}
					for i := range hosts {
						st.Hosts = append(st.Hosts, api.HostStatus{Host: fmt.Sprintf("host-%04d", i), State: api.StateConverged, Reasons: []string{"a reason long enough to make the body grow"}})
					}
					w.Header().Set("Content-Type", "application/json")
					_ = json.NewEncoder(w).Encode(st)
				}),
				ConnState: func(_ net.Conn, s http.ConnState) {
					if s == http.StateNew {
						conns.Add(1)
					}
				},
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			c, err := client.New("unix://" + sock)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				st, err := c.Status(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Hosts) != hosts {
					t.Fatalf("%d hosts, want %d", len(st.Hosts), hosts)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("5 calls opened %d connections, want 1", n)
			}
		})
	}
}

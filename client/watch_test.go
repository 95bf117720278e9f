package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

// fakeWatch serves /v1/watch on a unix socket with handler and returns a
// client of it.
func fakeWatch(t *testing.T, handler http.HandlerFunc) *client.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "w.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWatchStream: events, keepalives and the error line that ends a
// stream, as romanad writes them.
func TestWatchStream(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string // written, each flushed, before the handler returns
		want  string   // the error Watch returns ("" for none)
		n     int      // events passed to fn
	}{
		{"error line", []string{
			`{"revision":5,"type":"put","kind":"tenant","name":"a","object":{"name":"a"}}`,
			`{"revision":6,"type":"put","kind":"host","name":"h1","object":{}}`,
			``,
			`{"revision":6,"type":"put","kind":"host","name":"h2","object":{},"revisionEnd":true}`,
			`{"error":{"status":503,"reason":"Unavailable","message":"watch cut off"}}`,
		}, "watch cut off", 3},
		{"end without error line", []string{
			`{"revision":5,"type":"put","kind":"tenant","name":"a","object":{"name":"a"},"revisionEnd":true}`,
		}, "ended without an error line", 1},
		{"undecodable line", []string{`{"revision":`}, "decode event", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeWatch(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Romana-Watch-Keepalive", "1s")
				for _, l := range tc.lines {
					fmt.Fprintln(w, l)
					w.(http.Flusher).Flush()
				}
			})
			var got []api.Event
			err := c.Watch(context.Background(), 5, func(e api.Event) error { got = append(got, e); return nil })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Watch returned %v, want an error with %q", err, tc.want)
			}
			if len(got) != tc.n {
				t.Fatalf("%d events, want %d: %+v", len(got), tc.n, got)
			}
			if tc.name == "error line" {
				if api.ReasonOf(err) != api.ReasonUnavailable {
					t.Errorf("error %v is not an *api.Error Unavailable", err)
				}
				if got[0].RevisionEnd || got[1].RevisionEnd || !got[2].RevisionEnd {
					t.Errorf("RevisionEnd not passed on: %+v", got)
				}
			}
		})
	}
}

// TestWatchIdleDeadline: a stream that goes silent (no event, no
// keepalive) for three keepalive intervals ends with an error, so that the
// watcher reconnects instead of waiting on a dead connection forever. A
// stream that keeps sending keepalives does not.
func TestWatchIdleDeadline(t *testing.T) {
	silent := make(chan struct{})
	t.Cleanup(func() { close(silent) })
	c := fakeWatch(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Romana-Watch-Keepalive", "400ms")
		fmt.Fprintln(w, `{"revision":5,"type":"put","kind":"tenant","name":"a","object":{},"revisionEnd":true}`)
		w.(http.Flusher).Flush()
		if r.URL.Query().Get("revision") == "7" { // keepalives for 3s, then stop
			for i := 0; i < 10; i++ {
				time.Sleep(300 * time.Millisecond)
				fmt.Fprintln(w)
				w.(http.Flusher).Flush()
			}
		}
		<-silent // a hung romanad, or a dead connection
	})
	for _, rev := range []int64{5, 7} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		n := 0
		err := c.Watch(ctx, rev, func(api.Event) error { n++; return nil })
		cancel()
		took := time.Since(start)
		if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no event or keepalive") {
			t.Fatalf("revision %d: Watch returned %v after %s, want the idle error", rev, err, took)
		}
		if n != 1 {
			t.Fatalf("revision %d: %d events", rev, n)
		}
		if rev == 7 && took < 3*time.Second {
			t.Fatalf("revision 7: a stream with keepalives was taken for dead after %s", took)
		}
		t.Logf("revision %d: %v after %s", rev, err, took.Round(10*time.Millisecond))
	}
}

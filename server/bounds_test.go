package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server"
	"github.com/romana/romana/server/servertest"
)

// smallWindowDialer dials with an 8 KiB receive buffer (no autotuning), so
// that a peer that does not read stops the sender after a few kilobytes
// instead of megabytes of loopback buffering.
func smallWindowDialer() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10) })
		return errors.Join(err, serr)
	}}
}

// smallBufferListener listens on loopback with an 8 KiB send buffer (no
// autotuning) on every accepted connection, so that romanad's writes to a
// client that does not read block after kilobytes, not the megabytes that
// loopback buffers by default.
func smallBufferListener() servertest.Option {
	return servertest.WithListener(func() (net.Listener, error) {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 8<<10) })
			return errors.Join(err, serr)
		}}
		return lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	}, "127.0.0.1", "localhost")
}

// tlsAs returns a client TLS configuration for the instance that presents
// id's certificate (id zero: none).
func tlsAs(t *testing.T, in *servertest.Instance, id pki.Identity) *tls.Config {
	t.Helper()
	if id.IsZero() {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(in.CA.PEM)
		return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	}
	cfg, _, err := in.Credential(t, id).TLS()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// goroutinesBelow waits until the process has at most n goroutines, and
// fails after limit.
func goroutinesBelow(t *testing.T, n int, limit time.Duration) {
	t.Helper()
	expect.Eventually(t, fmt.Sprintf("at most %d goroutines", n), limit, func() error {
		if g := runtime.NumGoroutine(); g > n {
			return fmt.Errorf("%d goroutines", g)
		}
		return nil
	})
}

// TestStalledBodiesAreCut opens connections that send a request's headers
// and then stall in its body, with a client certificate (a handler reads
// the body) and without (the request is refused before the body, and
// net/http would discard the rest of it after the handler). Each must be
// answered and closed once the body timeout passes, and romanad's
// goroutines must come back to where they were.
func TestStalledBodiesAreCut(t *testing.T) {
	const conns = 300
	in := servertest.Start(t, servertest.WithServerConfig(func(c *server.Config) { c.BodyTimeout = time.Second }))
	addr := strings.TrimPrefix(in.URL, "https://")
	admin, nobody := tlsAs(t, in, pki.Admin), tlsAs(t, in, pki.Identity{})
	in.Client.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()

	type stalled struct {
		c    *tls.Conn
		want string
	}
	var all []stalled
	defer func() {
		for _, s := range all {
			s.c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		cfg, want := admin, "HTTP/1.1 400"
		if i%2 == 1 {
			cfg, want = nobody, "HTTP/1.1 401"
		}
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		all = append(all, stalled{c, want})
		if _, err := fmt.Fprintf(c, "POST /v1/tenants HTTP/1.1\r\nHost: romanad\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d goroutines with %d stalled requests sent (base %d)", runtime.NumGoroutine(), conns, base)
	deadline := time.Now().Add(20 * time.Second)
	for i, s := range all {
		s.c.SetReadDeadline(deadline)
		b, err := io.ReadAll(s.c)
		if err != nil {
			t.Fatalf("connection %d: not closed by romanad: %v (read %q)", i, err, b)
		}
		if !strings.HasPrefix(string(b), s.want) {
			t.Fatalf("connection %d: got %q, want %s", i, b, s.want)
		}
	}
	goroutinesBelow(t, base+20, 10*time.Second)
}

// TestConnectionLimit: with every connection slot taken (by peers that
// connect and say nothing), a new client waits until one is freed.
func TestConnectionLimit(t *testing.T) {
	const limit = 4
	in := servertest.Start(t, servertest.WithServerConfig(func(c *server.Config) { c.MaxConns = limit }))
	addr := strings.TrimPrefix(in.URL, "https://")
	var idle []net.Conn
	for i := 0; i < limit; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	fresh := in.ClientAs(t, pki.Admin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := fresh.Health(ctx); err == nil {
		t.Fatalf("a request got through with all %d connection slots taken", limit)
	}
	for _, c := range idle {
		c.Close()
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := fresh.Health(ctx2); err != nil {
		t.Fatalf("after the idle connections closed: %v", err)
	}
}

// putPolicies writes n policy objects of about size bytes each straight
// into the store (bypassing the API), perTxn of them in each transaction
// (one store revision), so that watch streams carry n events fast.
func putPolicies(t *testing.T, in *servertest.Instance, prefix string, n, size, perTxn int) {
	t.Helper()
	desc := strings.Repeat("x", size)
	var ops []clientv3.Op
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s-%04d", prefix, i)
		v := fmt.Sprintf(`{"name":%q,"description":%q,"direction":["ingress"],"appliedTo":[{"tenant":"t"}],"rules":[]}`, name, desc)
		ops = append(ops, clientv3.OpPut(in.Prefix+"policies/"+name, v))
		if len(ops) == perTxn || i == n-1 {
			if _, err := in.Etcd().Txn(context.Background()).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = nil
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestStalledWatcherIsBounded: a watcher that reads the response headers
// and then nothing must not make romanad hold the change stream: romanad's
// heap (the store is an external etcd, so the test process is romanad
// alone) grows by at most a few MiB while 19 MiB of events are written,
// the watch is cut off, and the connection is closed once a write has
// waited the write timeout.
func TestStalledWatcherIsBounded(t *testing.T) {
	const (
		events    = 600
		eventSize = 32 << 10
		backlog   = 512 << 10
		writeTO   = 2 * time.Second
	)
	e := servertest.StartEtcd(t, nil)
	in := servertest.Start(t, servertest.WithEtcdEndpoints(e.Endpoint), smallBufferListener(),
		servertest.WithRegistryOptions(func(o *ipam.Options) { o.WatchBacklog = backlog }),
		servertest.WithServerConfig(func(c *server.Config) { c.WriteTimeout = writeTO }))
	ctx := context.Background()
	snap, err := in.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := tls.DialWithDialer(smallWindowDialer(), "tcp", strings.TrimPrefix(in.URL, "https://"), tlsAs(t, in, pki.Admin))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET /v1/watch?revision=%d HTTP/1.1\r\nHost: romanad\r\n\r\n", snap.Revision+1)
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %v, %v", resp, err)
	}
	// From here on the watcher reads nothing.
	before := heapInUse()
	putPolicies(t, in, "stall", events, eventSize, 1)
	time.Sleep(time.Second) // let the store deliver the last events
	grew := int64(heapInUse()) - int64(before)
	t.Logf("heap grew by %.1f MiB while %.1f MiB of events were written to a stalled watcher (backlog %d KiB)",
		float64(grew)/(1<<20), float64(events*eventSize)/(1<<20), backlog>>10)
	if grew > 6<<20 {
		t.Errorf("heap grew by %.1f MiB, want at most 6 MiB", float64(grew)/(1<<20))
	}
	if n := in.Registry().Stats().WatchCutoffs; n != 1 {
		t.Errorf("%d watches cut off, want 1", n)
	}
	// romanad ended the stream (with an error line, if it still fitted in
	// the socket buffers, or by closing the connection once a write had
	// waited the write timeout), short of the whole change stream.
	raw.SetReadDeadline(time.Now().Add(writeTO + 20*time.Second))
	n, err := io.Copy(io.Discard, resp.Body)
	if isTimeout(err) {
		t.Fatalf("the stalled watch was not ended: %v after %d bytes", err, n)
	}
	if n >= events*eventSize {
		t.Fatalf("the stalled watcher was sent all %d bytes of events", n)
	}
}

// TestSlowWatcherResumes: a watcher that reads, but slower than events
// come, is cut off with a resumable error; watching again from the
// revision after its last whole one, it gets every event exactly once (it
// takes a revision's events when the revision is whole, as a watcher that
// keeps a consistent copy does).
func TestSlowWatcherResumes(t *testing.T) {
	const (
		events    = 200
		eventSize = 16 << 10
	)
	in := servertest.Start(t, smallBufferListener(), servertest.WithRegistryOptions(func(o *ipam.Options) { o.WatchBacklog = 256 << 10 }))
	ctx := context.Background()
	snap, err := in.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := in.Credential(t, pki.Admin).TLS()
	if err != nil {
		t.Fatal(err)
	}
	slowDial := smallWindowDialer()
	c, err := client.New(in.URL, client.WithTLS(cfg), func(tr *http.Transport) { tr.DialContext = slowDial.DialContext })
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var pending []string
	var lastEnd int64 = snap.Revision
	take := func(ev api.Event) {
		pending = append(pending, ev.Name)
		if ev.RevisionEnd {
			for _, n := range pending {
				seen[n]++
			}
			pending, lastEnd = nil, ev.Revision
		}
	}
	errc := make(chan error, 1)
	synced := make(chan struct{})
	go func() {
		errc <- c.Watch(ctx, snap.Revision+1, func(ev api.Event) error {
			if ev.Name == "slow-first-0000" {
				lastEnd = ev.Revision
				close(synced)
				return nil
			}
			take(ev)
			time.Sleep(20 * time.Millisecond)
			return nil
		})
	}()
	// Once the watch is live (etcd sends a watch that catches up on old
	// revisions up to 1,000 of them in one response, which is delivered
	// whole), 10 revisions of 20 events: far faster than the watcher reads.
	putPolicies(t, in, "slow-first", 1, 10, 1)
	select {
	case <-synced:
	case err := <-errc:
		t.Fatalf("watch: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("watch: the first event did not come in 30s")
	}
	putPolicies(t, in, "slow", events, eventSize, 20)
	select {
	case err = <-errc:
	case <-time.After(60 * time.Second):
		t.Fatal("the slow watcher is still watching 60s after the last event was written")
	}
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Reason != api.ReasonUnavailable || !strings.Contains(ae.Message, "cut off") {
		t.Fatalf("slow watcher ended with %v, want an Unavailable cut-off error", err)
	}
	t.Logf("cut off after %d events: %v", len(seen), err)
	if len(seen) >= events {
		t.Fatalf("the slow watcher got all %d events before the cut-off", len(seen))
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pending = nil
	done := make(chan error, 1)
	go func() {
		done <- in.Client.Watch(wctx, lastEnd+1, func(ev api.Event) error {
			take(ev)
			if len(seen) == events {
				cancel()
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("resumed watch: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("resumed watch: %d of %d events after 60s", len(seen), events)
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("event of %s delivered %d times", name, n)
		}
	}
}

// TestUnreadResponseIsCut: a client that asks for a large response and
// reads none of it is disconnected once the write timeout has passed.
func TestUnreadResponseIsCut(t *testing.T) {
	const writeTO = 2 * time.Second
	in := servertest.Start(t, smallBufferListener(), servertest.WithServerConfig(func(c *server.Config) { c.WriteTimeout = writeTO }))
	putPolicies(t, in, "big", 100, 32<<10, 20) // a 3 MiB snapshot
	raw, err := tls.DialWithDialer(smallWindowDialer(), "tcp", strings.TrimPrefix(in.URL, "https://"), tlsAs(t, in, pki.Admin))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET /v1/snapshot HTTP/1.1\r\nHost: romanad\r\n\r\n")
	time.Sleep(writeTO + 2*time.Second)
	raw.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Fatalf("the whole %d-byte snapshot was written to a client that did not read for %s", n, writeTO+2*time.Second)
	}
	if isTimeout(err) {
		t.Fatalf("after %d bytes: %v, want the connection closed by romanad", n, err)
	}
}

// isTimeout reports whether err is a read that ran into its deadline (and
// not the peer closing the connection).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestBodyTimeoutSparesHandlersAndStreams: the body timeout bounds reading
// a request, not what follows. With a 1 s body timeout, a request whose
// handler waits 3 s after reading its body (on a store frozen for 3 s) is
// answered normally, and a watch stream opened before it lives on and
// delivers the change. (net/http lifts the read deadline once the body is
// read; if it did not, its background read would cancel the requests.)
func TestBodyTimeoutSparesHandlersAndStreams(t *testing.T) {
	e := servertest.StartEtcd(t, nil)
	in := servertest.Start(t, servertest.WithEtcdEndpoints(e.Endpoint),
		servertest.WithServerConfig(func(c *server.Config) { c.BodyTimeout = time.Second }))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, err := in.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan api.Event, 10)
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- in.Client.Watch(ctx, snap.Revision+1, func(ev api.Event) error { events <- ev; return nil })
	}()
	etcd, err := os.FindProcess(e.PID)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the watch start
	if err := etcd.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := time.AfterFunc(3*time.Second, func() { etcd.Signal(syscall.SIGCONT) })
	defer func() {
		if thawed.Stop() {
			etcd.Signal(syscall.SIGCONT)
		}
	}()
	start := time.Now()
	if _, err := in.Client.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatalf("add tenant while the store was frozen for 3s (body timeout 1s): %v", err)
	}
	if took := time.Since(start); took < 3*time.Second {
		t.Fatalf("answered after %s: the store was not frozen", took)
	}
	select {
	case ev := <-events:
		if ev.Name != "acme" {
			t.Fatalf("watch event %+v", ev)
		}
	case err := <-watchErr:
		t.Fatalf("the watch stream ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
}

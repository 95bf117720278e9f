// Package servertest starts a real romanad (an embedded or external etcd
// store, the IPAM registry and the HTTP API on TCP and a unix socket) inside
// a test, for tests of any package that talks to romanad.
package servertest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/client"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/server"
	"github.com/romana/romana/store"
)

// Option configures Start.
type Option func(*config)

type config struct {
	endpoints []string
	prefix    string
	logger    *slog.Logger
	keepalive time.Duration
	fsync     bool
}

// WithEtcdEndpoints uses an external etcd instead of an embedded one.
// Several instances on one etcd with the same prefix share their state.
func WithEtcdEndpoints(endpoints ...string) Option {
	return func(c *config) { c.endpoints = endpoints }
}

// WithPrefix sets the etcd key prefix (default ipam.DefaultPrefix).
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithLogger sends romanad's logs to l (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithKeepalive sets the watch stream keepalive interval.
func WithKeepalive(d time.Duration) Option { return func(c *config) { c.keepalive = d } }

// WithFsync makes the embedded etcd fsync as in production. By default a
// test instance skips fsync: it is faster, and Stop/Restart are graceful.
func WithFsync() Option { return func(c *config) { c.fsync = true } }

// Instance is a running romanad. Stop and Restart are safe to call more than
// once; Restart keeps the data directory, the URL and the socket path.
type Instance struct {
	// URL is the TCP endpoint, "http://127.0.0.1:PORT".
	URL string
	// Socket is the unix socket path; client.New("unix://" + Socket) reaches it.
	Socket string
	// Client talks to URL.
	Client *client.Client
	// DataDir is the embedded etcd's data directory ("" with an external etcd).
	DataDir string
	// Prefix is the etcd key prefix of the instance's state.
	Prefix string
	// Stop stops romanad and its embedded etcd.
	Stop func()
	// Restart stops romanad and starts it again on the same data.
	Restart func()

	mu   sync.Mutex
	etcd *clientv3.Client
	reg  *ipam.Registry
}

// Etcd returns the running instance's etcd client, for tests that inspect
// the store directly. It changes on Restart.
func (in *Instance) Etcd() *clientv3.Client {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.etcd
}

// Registry returns the running instance's registry. It changes on Restart.
func (in *Instance) Registry() *ipam.Registry {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reg
}

// Start starts romanad for the test; t.Cleanup stops it.
func Start(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	cfg := config{prefix: ipam.DefaultPrefix}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	// Unix socket paths are limited to 108 bytes: keep it short.
	sockDir, err := os.MkdirTemp("", "romt-sock-")
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	in := &Instance{Socket: filepath.Join(sockDir, "romanad.sock"), Prefix: cfg.prefix}
	if len(cfg.endpoints) == 0 {
		in.DataDir = t.TempDir()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	addr := ln.Addr().String()
	in.URL = "http://" + addr
	if in.Client, err = client.New(in.URL); err != nil {
		t.Fatalf("servertest: %v", err)
	}

	var (
		stopMu sync.Mutex
		stop   func()
	)
	start := func(tcp net.Listener) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		st, err := store.Open(ctx, store.Config{DataDir: in.DataDir, Endpoints: cfg.endpoints,
			UnsafeNoFsync: !cfg.fsync, Logger: cfg.logger})
		if err != nil {
			cancel()
			tcp.Close()
			t.Fatalf("servertest: %v", err)
		}
		reg := ipam.New(st.Client, ipam.Options{Prefix: cfg.prefix, Logger: cfg.logger})
		if err := reg.Repair(ctx); err != nil {
			cancel()
			tcp.Close()
			st.Close()
			t.Fatalf("servertest: repair: %v", err)
		}
		unix, err := server.ListenUnix(in.Socket)
		if err != nil {
			cancel()
			tcp.Close()
			st.Close()
			t.Fatalf("servertest: %v", err)
		}
		srv := server.New(server.Config{Registry: reg, Logger: cfg.logger, Keepalive: cfg.keepalive})
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := srv.Serve(ctx, tcp, unix); err != nil {
				cfg.logger.Error("servertest: serve", "err", err)
			}
		}()
		in.mu.Lock()
		in.etcd, in.reg = st.Client, reg
		in.mu.Unlock()
		stopMu.Lock()
		stop = func() {
			cancel()
			<-done
			st.Close()
		}
		stopMu.Unlock()
		if err := in.Client.WaitHealthy(context.Background(), 30*time.Second); err != nil {
			t.Fatalf("servertest: %v", err)
		}
	}
	in.Stop = func() {
		stopMu.Lock()
		s := stop
		stop = nil
		stopMu.Unlock()
		if s != nil {
			s()
		}
	}
	in.Restart = func() {
		t.Helper()
		in.Stop()
		var ln net.Listener
		var err error
		for i := 0; i < 50; i++ { // the old listener's port is free again once Stop returns
			if ln, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("servertest: restart: %v", err)
		}
		start(ln)
	}
	t.Cleanup(in.Stop)
	start(ln)
	return in
}

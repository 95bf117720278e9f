// Package servertest starts a real romanad (an embedded or external etcd
// store, the IPAM registry and the API on mutual-TLS TCP and a unix socket)
// inside a test, for tests of any package that talks to romanad. It holds
// the instance's CA, so tests can make a credential for any identity.
package servertest

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/pki"
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
	hostValid time.Duration
	listener  func() (net.Listener, error)
	names     []string
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	server    func(*server.Config)
	registry  func(*ipam.Options)
}

// WithServerConfig lets edit change romanad's server configuration (its
// timeouts and limits) after the harness has filled it in.
func WithServerConfig(edit func(*server.Config)) Option {
	return func(c *config) { c.server = edit }
}

// WithRegistryOptions lets edit change the registry's options (its watch
// backlog) after the harness has filled them in.
func WithRegistryOptions(edit func(*ipam.Options)) Option {
	return func(c *config) { c.registry = edit }
}

// WithHostCertValidity sets the lifetime of host and CNI certificates that
// the instance issues (join, renewal).
func WithHostCertValidity(d time.Duration) Option { return func(c *config) { c.hostValid = d } }

// WithListener makes the instance serve TLS on listeners from listen (for
// example one created inside a lab namespace) instead of 127.0.0.1:0; names
// are the serving certificate's names and addresses. listen is called again
// on Restart. A listener inside a namespace needs WithDialer too.
func WithListener(listen func() (net.Listener, error), names ...string) Option {
	return func(c *config) { c.listener, c.names = listen, names }
}

// WithDialer makes the instance's own clients (Client, HTTP, ClientAs,
// HTTPClient and Start's health check) connect with dial. A listener
// inside a namespace (WithListener) needs it: the test's own namespace has
// no route to that address, and must not send packets off the machine
// looking for one. Start refuses a listener off loopback without it.
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(c *config) { c.dial = dial }
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
	// URL is the TLS endpoint, "https://127.0.0.1:PORT".
	URL string
	// Socket is the unix socket path; client.New("unix://" + Socket) reaches it (as admin).
	Socket string
	// Client talks to URL as admin.
	Client *client.Client
	// CA is the instance's certificate authority.
	CA *pki.CA
	// HTTP is a plain HTTP client of URL that presents the admin certificate,
	// for tests that send raw requests.
	HTTP *http.Client
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
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
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
	in := &Instance{Socket: filepath.Join(sockDir, "romanad.sock"), Prefix: cfg.prefix, dial: cfg.dial}
	if len(cfg.endpoints) == 0 {
		in.DataDir = t.TempDir()
	}
	listen := cfg.listener
	if listen == nil {
		listen = func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
		cfg.names = []string{"127.0.0.1", "localhost"}
	}
	ln, err := listen()
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	addr := ln.Addr().String()
	in.URL = "https://" + addr
	if ap, err := netip.ParseAddrPort(addr); cfg.dial == nil && (err != nil || !ap.Addr().IsLoopback()) {
		ln.Close()
		t.Fatalf("servertest: the listener is at %s, off loopback: give WithDialer so that the harness's clients dial where it listens", addr)
	}
	ca, _, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	in.CA = ca
	serving, err := pki.ServerSetup{Names: cfg.names}.IssueServing(ca, time.Now())
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca.Cert)
	srvTLS := &server.TLSConfig{Serving: serving, ClientCAs: clientCAs, CA: ca, HostValidity: cfg.hostValid}
	admin := in.newCredential(t, pki.Admin, time.Hour)
	in.Client = in.clientFor(t, admin)
	in.HTTP = in.HTTPClient(t, admin)

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
		ropts := ipam.Options{Prefix: cfg.prefix, Logger: cfg.logger}
		if cfg.registry != nil {
			cfg.registry(&ropts)
		}
		reg := ipam.New(st.Client, ropts)
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
		scfg := server.Config{Registry: reg, Logger: cfg.logger, Keepalive: cfg.keepalive, TLS: srvTLS}
		if cfg.server != nil {
			cfg.server(&scfg)
		}
		srv := server.New(scfg)
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
		relisten := func() (net.Listener, error) { return net.Listen("tcp", addr) }
		if cfg.listener != nil {
			relisten = cfg.listener
		}
		for i := 0; i < 50; i++ { // the old listener's port is free again once Stop returns
			if ln, err = relisten(); err == nil {
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

func (in *Instance) newCredential(t testing.TB, id pki.Identity, validity time.Duration) *pki.Credential {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	_, certPEM, err := in.CA.Issue(key.Public(), pki.Template{Identity: id.String(), Validity: validity}, time.Now())
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return &pki.Credential{Kind: pki.CredentialKind, Server: in.URL, Identity: id.String(),
		CA: string(in.CA.PEM), Cert: string(certPEM), Key: string(keyPEM)}
}

// Credential issues a certificate for id signed by the instance's CA and
// records it (so that revoking the identity revokes it).
func (in *Instance) Credential(t testing.TB, id pki.Identity) *pki.Credential {
	t.Helper()
	c := in.newCredential(t, id, time.Hour)
	leaf, err := c.Leaf()
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	if err := in.Registry().RecordCert(context.Background(), api.CertRecord{Serial: pki.Serial(leaf), Identity: id.String(),
		NotAfter: leaf.NotAfter, IssuedBy: "servertest"}); err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return c
}

// ClientAs returns a client of the TLS endpoint that presents a new
// certificate for id.
func (in *Instance) ClientAs(t testing.TB, id pki.Identity) *client.Client {
	t.Helper()
	return in.clientFor(t, in.Credential(t, id))
}

// clientFor returns a client of URL that presents cred's certificate and
// dials with the instance's dialer.
func (in *Instance) clientFor(t testing.TB, cred *pki.Credential) *client.Client {
	t.Helper()
	cfg, _, err := cred.TLS()
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	opts := []client.Option{client.WithTLS(cfg)}
	if in.dial != nil {
		opts = append(opts, func(tr *http.Transport) { tr.DialContext = in.dial })
	}
	c, err := client.New(in.URL, opts...)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return c
}

// WriteCredential writes a credential for id into dir and returns its path.
func (in *Instance) WriteCredential(t testing.TB, id pki.Identity, dir string) string {
	t.Helper()
	path := filepath.Join(dir, strings.ReplaceAll(id.String(), ":", "-")+".conf")
	if err := in.Credential(t, id).Save(path); err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return path
}

// HTTPClient returns a plain HTTP client that trusts the instance's CA and
// presents cred's certificate (nil: none).
func (in *Instance) HTTPClient(t testing.TB, cred *pki.Credential) *http.Client {
	t.Helper()
	var kp *pki.Keypair
	if cred != nil {
		var err error
		if kp, err = pki.NewKeypair([]byte(cred.Cert), []byte(cred.Key)); err != nil {
			t.Fatalf("servertest: %v", err)
		}
	}
	cfg, err := pki.ClientTLS(in.CA.PEM, kp)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: in.dial}}
}

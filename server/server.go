// Package server is romanad's HTTP API: the /v1 REST routes of package
// client over an ipam.Registry, with JSON errors, size-limited strict request
// bodies, a resumable NDJSON watch stream, /healthz and Prometheus /metrics.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/romana/romana/api"
	"github.com/romana/romana/health"
	"github.com/romana/romana/ipam"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes = 64 << 10
	DefaultKeepalive    = 15 * time.Second
	DefaultWriteTimeout = 60 * time.Second
	DefaultBodyTimeout  = 30 * time.Second
	DefaultMaxConns     = 4096
	DefaultPodWait      = 10 * time.Second
)

// Fixed bounds of every connection (see docs/reliability.md).
const (
	readHeaderTimeout = 10 * time.Second // also bounds the TLS handshake
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

// Config configures a Server.
type Config struct {
	Registry *ipam.Registry
	Logger   *slog.Logger
	// MaxBodyBytes limits request bodies (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// Keepalive is the interval of empty lines on an idle watch stream
	// (default DefaultKeepalive).
	Keepalive time.Duration
	// WriteTimeout bounds writing a response, from the end of its request's
	// headers to its last byte; on a watch stream, writing each line
	// (default DefaultWriteTimeout). A client that stops reading is
	// disconnected after it.
	WriteTimeout time.Duration
	// BodyTimeout bounds reading a request, headers and body, from its
	// first byte (default DefaultBodyTimeout; the headers alone have 10 s):
	// http.Server.ReadTimeout. net/http lifts the connection's read
	// deadline once the body has been read (or at once for a request
	// without one), so neither a handler that then works longer nor a
	// watch stream is cut by it.
	BodyTimeout time.Duration
	// MaxConns limits the open connections of each listener (default
	// DefaultMaxConns): further clients wait in the listen backlog until
	// one closes.
	MaxConns int
	// TLS is required to serve on TCP listeners (Serve refuses plaintext
	// TCP); unix socket listeners serve without it, to root only.
	TLS *TLSConfig
	// Now is the clock for certificates, tokens and the agents' status
	// (default time.Now).
	Now func() time.Time
	// Status tunes how agents' status reports are judged (GET /v1/status;
	// zero: health's defaults).
	Status health.Options
	// PodWait bounds how long an allocation for a pod waits for the pod's
	// record to appear (api.AddressRequest.Pod; default DefaultPodWait).
	PodWait time.Duration
}

// Server serves the API. Create it with New.
type Server struct {
	patterns  []string // every registered route, in registration order (Routes)
	reg       *ipam.Registry
	log       *slog.Logger
	maxBody   int64
	keepalive time.Duration
	writeTO   time.Duration
	bodyTO    time.Duration
	maxConns  int
	podWait   time.Duration
	mux       *http.ServeMux
	metrics   *metrics
	prom      *prometheus.Registry
	stats     statsStore  // policy counters reported by agents (policy_trace.go)
	status    statusStore // agents' status reports (status.go)
	tls       *TLSConfig
	revoked   *revocations
	now       func() time.Time

	stopOnce sync.Once
	stopping chan struct{} // closed when Serve shuts down: ends watch streams
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{
		reg:       cfg.Registry,
		log:       cfg.Logger,
		maxBody:   cfg.MaxBodyBytes,
		keepalive: cfg.Keepalive,
		writeTO:   cfg.WriteTimeout,
		bodyTO:    cfg.BodyTimeout,
		maxConns:  cfg.MaxConns,
		podWait:   cfg.PodWait,
		mux:       http.NewServeMux(),
		prom:      prometheus.NewRegistry(),
		stopping:  make(chan struct{}),
		tls:       cfg.TLS,
		revoked:   newRevocations(),
		now:       cfg.Now,
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.status.up = s.now()
	s.status.opts = cfg.Status
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.keepalive <= 0 {
		s.keepalive = DefaultKeepalive
	}
	if s.writeTO <= 0 {
		s.writeTO = DefaultWriteTimeout
	}
	if s.bodyTO <= 0 {
		s.bodyTO = DefaultBodyTimeout
	}
	if s.maxConns <= 0 {
		s.maxConns = DefaultMaxConns
	}
	if s.podWait <= 0 {
		s.podWait = DefaultPodWait
	}
	s.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = newMetrics(s.prom, s.reg)
	s.routes()
	return s
}

func (s *Server) routes() {
	s.register("GET /healthz", http.HandlerFunc(s.health))
	s.register("GET /metrics", promhttp.HandlerFor(s.prom, promhttp.HandlerOpts{}))

	s.handle("GET /v1/networks", s.listNetworks)
	s.handle("POST /v1/networks", s.addNetwork)
	s.handle("GET /v1/networks/{name}", s.getNetwork)
	s.handle("DELETE /v1/networks/{name}", s.removeNetwork)

	s.handle("GET /v1/hosts", s.listHosts)
	s.handle("POST /v1/hosts", s.addHost)
	s.handle("GET /v1/hosts/{name}", s.getHost)
	s.handle("DELETE /v1/hosts/{name}", s.removeHost)
	s.handle("DELETE /v1/hosts/{name}/addresses", s.releaseHostAddresses)

	s.handle("GET /v1/tenants", s.listTenants)
	s.handle("POST /v1/tenants", s.addTenant)
	s.handle("GET /v1/tenants/{name}", s.getTenant)
	s.handle("DELETE /v1/tenants/{name}", s.removeTenant)

	s.handle("GET /v1/segments", s.listAllSegments)
	s.handle("GET /v1/tenants/{tenant}/segments", s.listSegments)
	s.handle("POST /v1/tenants/{tenant}/segments", s.addSegment)
	s.handle("GET /v1/tenants/{tenant}/segments/{name}", s.getSegment)
	s.handle("DELETE /v1/tenants/{tenant}/segments/{name}", s.removeSegment)

	s.handle("POST /v1/addresses", s.allocate)
	s.handle("GET /v1/addresses", s.listAddresses)
	s.handle("GET /v1/addresses/{name}", s.getAddress)
	s.handle("DELETE /v1/addresses/{name}", s.release)
	s.handle("DELETE /v1/addresses", s.releaseIP)
	s.handle("GET /v1/decode", s.decode)

	s.handle("GET /v1/policies", s.listPolicies)
	s.handle("POST /v1/policies", s.postPolicy)
	s.handle("GET /v1/policies/{name}", s.getPolicy)
	s.handle("PUT /v1/policies/{name}", s.putPolicy)
	s.handle("DELETE /v1/policies/{name}", s.removePolicy)

	s.deviceRoutes()     // devices.go
	s.chainRoutes()      // chain.go
	s.addressSetRoutes() // addressset.go
	s.podRoutes()        // pod.go
	s.policyRoutes()     // policy_trace.go
	s.statusRoutes()     // status.go
	s.pkiRoutes()        // pki.go

	s.handle("GET /v1/snapshot", s.snapshot)
	s.register(watchPattern, http.HandlerFunc(s.watch))
}

// watchPattern is the route of the watch stream, which bounds its own
// writes line by line.
const watchPattern = "GET /v1/watch"

// handle registers an API handler that returns its error.
func (s *Server) handle(pattern string, h func(http.ResponseWriter, *http.Request) error) {
	s.register(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}))
}

// register adds a route to the mux and to Routes.
func (s *Server) register(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.patterns = append(s.patterns, pattern)
}

// Routes returns every route the server serves ("METHOD /path"), sorted:
// what the authorization table must cover.
func (s *Server) Routes() []string {
	return slices.Sorted(slices.Values(s.patterns))
}

// ServeHTTP routes a request, records its metrics and logs it at debug
// level. It first bounds the time its response may take to write: the
// write timeout from now (a watch stream bounds each line instead).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	_, pattern := s.mux.Handler(r)
	if pattern != watchPattern {
		_ = http.NewResponseController(w).SetWriteDeadline(start.Add(s.writeTO))
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	if pattern == "" {
		// No route: let the mux decide between 404 and 405 (and set Allow),
		// then answer with a JSON error instead of its text.
		probe := &statusProbe{header: http.Header{}}
		s.mux.ServeHTTP(probe, r)
		for k, v := range probe.header {
			if k == "Allow" {
				rec.Header()[k] = v
			}
		}
		err := api.Errorf(api.ReasonNotFound, "no route %s %s", r.Method, r.URL.Path)
		if probe.status == http.StatusMethodNotAllowed {
			err = &api.Error{Status: http.StatusMethodNotAllowed, Reason: api.ReasonInvalid,
				Message: fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, probe.header.Get("Allow"))}
		}
		s.writeError(rec, r, err)
		pattern = "unmatched"
	} else {
		ar, c, err := s.authorize(r, pattern)
		if err != nil {
			s.writeError(rec, r, err)
		} else {
			s.mux.ServeHTTP(rec, ar)
		}
		s.audit(r, c, pattern, rec.status, err)
	}
	d := time.Since(start)
	s.metrics.observe(pattern, rec.status, d)
	s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "route", pattern, "status", rec.status, "duration", d)
}

// recorder remembers the status of a response; it passes Flush through.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// statusProbe captures the status and headers of the mux's own error reply.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(code int)        { p.status = code }

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.reg.Ping(ctx); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// Serve serves on each listener until ctx ends, then shuts down gracefully:
// watch streams end at once, other requests get up to 5 seconds. It runs
// the registry's watch feed (ipam.Registry.RunFeed), the one etcd watch
// every watch stream is served from, while it serves. Unix
// socket listeners serve HTTP (their peers are root, see ListenUnix); every
// other listener serves HTTPS with Config.TLS, and Serve refuses to start
// without it: romanad never serves plaintext TCP. Each listener holds at
// most Config.MaxConns connections at once.
//
// No server-wide write timeout: it would end watch streams; ServeHTTP
// sets one per response, the watch handler one per line. The headers (and
// the TLS handshake) must arrive within readHeaderTimeout, the whole
// request within the body timeout, and an idle connection closes after
// idleTimeout.
func (s *Server) Serve(ctx context.Context, lns ...net.Listener) error {
	for i, ln := range lns {
		if ln.Addr().Network() == "unix" {
			lns[i] = limitListener(ln, s.maxConns)
			continue
		}
		if s.tls == nil || s.tls.Serving == nil {
			return fmt.Errorf("serve on %s: refusing plaintext TCP: configure TLS (a serving certificate)", ln.Addr())
		}
		lns[i] = tls.NewListener(limitListener(ln, s.maxConns), s.serverTLS())
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       s.bodyTO,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ConnContext:       connContext,
	}
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	go s.followRevocations(fctx)
	go s.followRevisions(fctx) // status.go
	feedDone := make(chan struct{})
	defer func() { fcancel(); <-feedDone }()
	go func() {
		defer close(feedDone)
		if err := s.reg.RunFeed(fctx); err != nil {
			s.log.Error("watch feed", "err", err)
		}
	}()
	select { // serve nothing before revocations are known
	case <-s.revoked.ready:
	case <-ctx.Done():
		return nil
	}
	hs.RegisterOnShutdown(func() { s.stopOnce.Do(func() { close(s.stopping) }) })
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		s.log.Info("serving API", "address", ln.Addr().String())
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve on %s: %w", ln.Addr(), err)
				return
			}
			errc <- nil
		}()
	}
	var serr error
	select {
	case <-ctx.Done():
	case serr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	return serr
}

// ListenUnix listens on a unix socket at path for root only (mode 0600),
// creating its directory and removing a stale socket left by a previous
// run. It refuses to replace a socket another process still serves, or a
// file that is not a socket. Whoever can connect is admin.
func ListenUnix(path string) (net.Listener, error) { return ListenUnixGroup(path, -1) }

// ListenUnixGroup is ListenUnix with mode 0660 and group gid when gid >= 0:
// members of that group are admin too (like the docker group).
//
// The socket is bound inside a fresh 0700 directory next to path, given its
// mode and group there, and renamed into place: it is never reachable with
// a wider mode, whatever the umask.
func ListenUnixGroup(path string, gid int) (_ net.Listener, retErr error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving on this socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen on %s: remove stale socket: %w", path, err)
		}
	}
	tmp, err := os.MkdirTemp(dir, ".romanad-sock-")
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "s")
	ln, err := net.Listen("unix", tmpSock)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer func() {
		if retErr != nil {
			ln.Close()
		}
	}()
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Lchown(tmpSock, -1, gid); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", path, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(tmpSock, mode); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Rename(tmpSock, path); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return &unixListener{Listener: ln, path: path}, nil
}

// unixListener removes its socket file on Close.
type unixListener struct {
	net.Listener
	path string
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { os.Remove(l.path) })
	return err
}

// Addr reports the final path, not the temporary one it was bound at.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/romana/romana/access"
	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
)

// TLSConfig configures romanad's TLS: its serving certificate, the CAs
// whose client certificates it accepts, and the CA it signs with.
type TLSConfig struct {
	// Serving is the serving certificate (leaf first, then its CA, so that a
	// joining agent can pin the CA); it may be replaced while serving.
	Serving *pki.Keypair
	// ClientCAs verify client certificates.
	ClientCAs *x509.CertPool
	// CA signs joined hosts' and renewed certificates; nil disables join and
	// certificate requests (an external CA without its key).
	CA *pki.CA
	// HostValidity is the lifetime of host and CNI certificates (default
	// pki.HostValidity).
	HostValidity time.Duration
}

// caller is the authenticated identity of a request.
type caller struct {
	id       pki.Identity
	via      string // "tls", "unix" or "" (anonymous)
	cert     *x509.Certificate
	peer     string // unix: "uid=N"; tls: remote address
	decision access.Decision
	// refusal is why a handler refused a request that the table allowed
	// (the own-host scope), for the audit line.
	refusal error
}

type callerKey struct{}

func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey{}).(*caller)
	if c == nil {
		return &caller{}
	}
	return c
}

type connKey struct{}

// connInfo is what ConnContext learned about the connection.
type connInfo struct {
	unix bool
	uid  int // unix peer's uid (-1 unknown)

	// verified is the client certificate whose chain verified on this TLS
	// connection (TLS 1.3 has no renegotiation: it cannot change), so that
	// later requests only check its validity window and revocation.
	mu       sync.Mutex
	verified *x509.Certificate
}

func (ci *connInfo) chainVerified(leaf *x509.Certificate) bool {
	if ci == nil {
		return false
	}
	ci.mu.Lock()
	defer ci.mu.Unlock()
	return ci.verified == leaf
}

func (ci *connInfo) setVerified(leaf *x509.Certificate) {
	if ci != nil {
		ci.mu.Lock()
		ci.verified = leaf
		ci.mu.Unlock()
	}
}

// connContext records a unix socket peer's credentials.
func connContext(ctx context.Context, c net.Conn) context.Context {
	ci := &connInfo{uid: -1}
	if lc, ok := c.(*limitedConn); ok {
		c = lc.NetConn()
	}
	if uc, ok := c.(*net.UnixConn); ok {
		ci.unix = true
		if raw, err := uc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
					ci.uid = int(cred.Uid)
				}
			})
		}
	}
	return context.WithValue(ctx, connKey{}, ci)
}

// authenticate returns the caller of r. The unix socket is root's (its
// mode is 0600): its peers are admin. Over TLS, a client certificate must
// verify against ClientCAs now and not be revoked.
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	ci, _ := r.Context().Value(connKey{}).(*connInfo)
	if ci != nil && ci.unix {
		return &caller{id: pki.Admin, via: "unix", peer: fmt.Sprintf("uid=%d", ci.uid)}, nil
	}
	if r.TLS == nil {
		// Serve never serves plaintext TCP; this is a handler used directly.
		return nil, api.Errorf(api.ReasonUnauthorized, "plaintext request refused: romanad serves TCP over TLS only")
	}
	c := &caller{via: "tls", peer: r.RemoteAddr}
	if len(r.TLS.PeerCertificates) == 0 {
		return c, nil // anonymous: only the join route
	}
	leaf := r.TLS.PeerCertificates[0]
	if s.tls == nil || s.tls.ClientCAs == nil {
		return nil, api.Errorf(api.ReasonUnauthorized, "client certificate %q refused: romanad trusts no client CA", leaf.Subject.CommonName)
	}
	now := s.now()
	if ci.chainVerified(leaf) {
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return nil, api.Errorf(api.ReasonUnauthorized, "client certificate %q (serial %s) refused: x509: certificate has expired or is not yet valid: current time %s is outside %s..%s",
				leaf.Subject.CommonName, pki.Serial(leaf), now.UTC().Format(time.RFC3339), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	} else {
		inter := x509.NewCertPool()
		for _, ic := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.tls.ClientCAs, Intermediates: inter,
			CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return nil, api.Errorf(api.ReasonUnauthorized, "client certificate %q (serial %s) refused: %v", leaf.Subject.CommonName, pki.Serial(leaf), err)
		}
		ci.setVerified(leaf)
	}
	if rec, ok := s.revoked.get(pki.Serial(leaf)); ok {
		return nil, api.Errorf(api.ReasonUnauthorized, "client certificate %q (serial %s) was revoked%s", leaf.Subject.CommonName, pki.Serial(leaf), revokedWhy(rec))
	}
	id, err := pki.ParseIdentity(leaf.Subject.CommonName)
	if err != nil {
		return nil, api.Errorf(api.ReasonUnauthorized, "client certificate (serial %s): %v", pki.Serial(leaf), err)
	}
	c.id, c.cert = id, leaf
	return c, nil
}

func revokedWhy(c api.CertRecord) string {
	s := ""
	if c.Revoked != nil {
		s = " at " + c.Revoked.UTC().Format(time.RFC3339)
	}
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	return s
}

// authorize authenticates r and checks the table for route; it returns
// the request with its caller in the context.
func (s *Server) authorize(r *http.Request, route string) (*http.Request, *caller, error) {
	c, err := s.authenticate(r)
	if err != nil {
		return r, &caller{via: "tls", peer: r.RemoteAddr}, err
	}
	c.decision = access.Decide(c.id, route)
	if !c.decision.Allowed {
		if c.id.IsZero() {
			return r, c, api.Errorf(api.ReasonUnauthorized, "%s", c.decision.Message)
		}
		return r, c, api.Errorf(api.ReasonForbidden, "%s", c.decision.Message)
	}
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c)), c, nil
}

// own checks that r's caller may act on host's objects (OwnHost scope).
func own(r *http.Request, host string) error {
	c := callerOf(r)
	if err := access.Own(c.id, c.decision, host); err != nil {
		return refuse(r, api.Errorf(api.ReasonForbidden, "%v", err))
	}
	return nil
}

// refuse records a handler's refusal of r for the audit line and returns it.
func refuse(r *http.Request, err *api.Error) error {
	callerOf(r).refusal = err
	return err
}

// ownHost returns the host r's caller is confined to, "" when unconfined.
func ownHost(r *http.Request) string {
	c := callerOf(r)
	if c.decision.Scope == access.OwnHost {
		return c.id.Host
	}
	return ""
}

// serverTLS is the listeners' TLS configuration: TLS 1.3, a client
// certificate requested but verified by authenticate, so that a bad one is
// answered with a 401 that says why instead of a failed handshake.
func (s *Server) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: s.tls.Serving.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
	}
}

// revocations is the set of revoked certificate serials, loaded from the
// store and kept current by a watch, so that a revocation made through any
// romanad takes effect on every romanad at once.
type revocations struct {
	mu    sync.RWMutex
	m     map[string]api.CertRecord
	ready chan struct{}
	// streams are open watch streams by certificate serial, ended when their
	// certificate is revoked.
	streams map[string]map[chan struct{}]struct{}
}

func newRevocations() *revocations {
	return &revocations{m: map[string]api.CertRecord{}, ready: make(chan struct{}), streams: map[string]map[chan struct{}]struct{}{}}
}

func (v *revocations) get(serial string) (api.CertRecord, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c, ok := v.m[serial]
	return c, ok
}

func (v *revocations) set(serial string, c api.CertRecord, revoked bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !revoked {
		delete(v.m, serial)
		return
	}
	v.m[serial] = c
	for ch := range v.streams[serial] {
		close(ch)
	}
	delete(v.streams, serial)
}

// replace makes m the revoked set in one step, ending the open streams of
// its serials: a reload never lets a revoked certificate through.
func (v *revocations) replace(m map[string]api.CertRecord) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m = m
	for serial := range m {
		for ch := range v.streams[serial] {
			close(ch)
		}
		delete(v.streams, serial)
	}
}

// stream registers an open stream of serial; its channel closes on
// revocation. The returned func unregisters it.
func (v *revocations) stream(serial string) (<-chan struct{}, func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ch := make(chan struct{})
	if _, revoked := v.m[serial]; revoked {
		close(ch)
		return ch, func() {}
	}
	if v.streams[serial] == nil {
		v.streams[serial] = map[chan struct{}]struct{}{}
	}
	v.streams[serial][ch] = struct{}{}
	return ch, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if m := v.streams[serial]; m != nil {
			if _, ok := m[ch]; ok {
				delete(m, ch)
				if len(m) == 0 {
					delete(v.streams, serial)
				}
			}
		}
	}
}

// followRevocations loads the revoked serials and follows changes until
// ctx ends, starting over after a broken watch.
func (s *Server) followRevocations(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		m, rev, err := s.reg.Revoked(ctx)
		if err == nil {
			s.revoked.replace(m)
			if first {
				close(s.revoked.ready)
				first = false
			}
			err = s.reg.WatchRevoked(ctx, rev, s.revoked.set)
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("following certificate revocations failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// reportRoutes are the periodic reports agents send about themselves
// (every few seconds per host). Their successes are audited at debug
// level, as Kubernetes' default audit policy leaves out node status
// updates: at Info they would bury the writes an operator looks for.
// Refused or failed reports are audited like any request.
var reportRoutes = map[string]bool{
	"PUT /v1/status/{host}":       true,
	"PUT /v1/policy/stats/{host}": true,
}

// audit logs a write, or any refused request, with its identity.
func (s *Server) audit(r *http.Request, c *caller, route string, status int, err error) {
	if r.Method == http.MethodGet && status < 400 {
		return
	}
	level := slog.LevelInfo
	if reportRoutes[route] && status < 400 {
		level = slog.LevelDebug
	}
	who := c.id.String()
	if c.id.IsZero() {
		who = "anonymous"
	}
	attrs := []any{"identity", who, "via", c.via, "peer", c.peer, "method", r.Method, "path", r.URL.RequestURI(), "route", route, "status", status}
	if c.cert != nil {
		attrs = append(attrs, "serial", pki.Serial(c.cert))
	}
	if err == nil {
		err = c.refusal
	}
	var ae *api.Error
	if errors.As(err, &ae) && status >= 400 {
		attrs = append(attrs, "error", ae.Message)
	}
	s.log.Log(r.Context(), level, "audit", attrs...)
}

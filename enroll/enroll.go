// Package enroll gives a host agent its identity: it joins romanad with a
// single-use token (a CSR for a key that never leaves the host), keeps the
// resulting credential in a file, renews it before it expires without a
// restart, and keeps the host's CNI plugin credential (identity cni:HOST)
// next to it. It is kubelet's TLS bootstrap and certificate rotation, for
// Romana.
package enroll

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
)

// Config says where the credentials live and how to obtain them.
type Config struct {
	// Server is romanad's https:// URL (default: the credential's).
	Server string
	// Path is the agent's credential file (identity host:NAME).
	Path string
	// Token, when Path does not exist yet, is used to join.
	Token string
	// Host is this host's name ("" takes it from the token's host).
	Host string
	// CNIPath, when set, is kept holding a credential for cni:HOST.
	CNIPath string
	Log     *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Enrollment is an agent's live credential. Client presents the current
// certificate; Run renews it, and each renewal closes Client's connections
// (streams too), so that none goes on with the old certificate.
type Enrollment struct {
	Client   *client.Client
	Identity pki.Identity
	Server   string

	cfg     Config
	kp      *pki.Keypair
	cred    *pki.Credential
	conns   *conns // Client's connections
	renewed chan struct{}
}

// Load returns the enrollment in cfg.Path, joining with cfg.Token first if
// there is none. A token given when a credential exists is ignored (the
// host has joined already), as kubelet ignores its bootstrap token then.
func Load(ctx context.Context, cfg Config) (*Enrollment, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cred, err := pki.LoadCredential(cfg.Path)
	switch {
	case err == nil:
		if cfg.Token != "" {
			cfg.Log.Info("already joined: ignoring --join", "credential", cfg.Path)
		}
	case errors.Is(err, os.ErrNotExist) && cfg.Token != "":
		if cred, err = join(ctx, cfg); err != nil {
			return nil, err
		}
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("no credential at %s: join this host once with --join TOKEN (romana host add NAME --ip IP, or romana host token NAME, prints one)", cfg.Path)
	default:
		return nil, err
	}
	leaf, err := cred.Leaf()
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", cfg.Path, err)
	}
	id, err := pki.ParseIdentity(leaf.Subject.CommonName)
	if err != nil || id.Role != pki.RoleHost {
		return nil, fmt.Errorf("credential %s: identity %q is not a host's (host:NAME)", cfg.Path, leaf.Subject.CommonName)
	}
	if cfg.Host != "" && cfg.Host != id.Host {
		return nil, fmt.Errorf("credential %s is for host %s, not --host %s", cfg.Path, id.Host, cfg.Host)
	}
	if cfg.Server == "" {
		cfg.Server = cred.Server
	}
	tlsCfg, kp, err := cred.TLS()
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", cfg.Path, err)
	}
	cs := &conns{m: map[*trackedConn]struct{}{}}
	cl, err := client.New(cfg.Server, client.WithTLS(tlsCfg), func(tr *http.Transport) { tr.DialContext = cs.dial })
	if err != nil {
		return nil, err
	}
	return &Enrollment{Client: cl, Identity: id, Server: cfg.Server, cfg: cfg, kp: kp, cred: cred, conns: cs, renewed: make(chan struct{}, 1)}, nil
}

func join(ctx context.Context, cfg Config) (*pki.Credential, error) {
	tok, err := pki.ParseToken(cfg.Token)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(cfg.Server, "https://") {
		return nil, fmt.Errorf("join: --server %q: want romanad's https://HOST:PORT", cfg.Server)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	ident := ""
	if cfg.Host != "" {
		ident = pki.Host(cfg.Host).String()
	}
	csr, err := pki.NewCSR(key, ident)
	if err != nil {
		return nil, err
	}
	resp, err := client.Join(ctx, cfg.Server, tok, csr)
	if err != nil {
		return nil, fmt.Errorf("join %s with token %s: %w", cfg.Server, tok.ID, err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	cred := &pki.Credential{Server: cfg.Server, Identity: resp.Identity, CA: resp.CA, Cert: resp.Cert, Key: string(keyPEM)}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if err := cred.Save(cfg.Path); err != nil {
		return nil, err
	}
	cfg.Log.Info("joined romanad", "identity", resp.Identity, "serial", resp.Serial, "notAfter", resp.NotAfter, "credential", cfg.Path)
	return cred, nil
}

// Prepare does what is due now (a renewal, the CNI credential) once,
// logging a failure, which Run retries: a host whose romanad is briefly
// unreachable still starts with the credential it has.
func (e *Enrollment) Prepare(ctx context.Context) {
	if _, err := e.step(ctx); err != nil {
		e.cfg.Log.Warn("credential upkeep failed; retrying in the background", "err", err)
	}
}

// Leaf returns the certificate in use.
func (e *Enrollment) Leaf() *x509.Certificate { return e.kp.Leaf() }

// Renewed is signalled (capacity 1) after each renewal of the host's
// certificate; tests and metrics watch it.
func (e *Enrollment) Renewed() <-chan struct{} { return e.renewed }

// renewAt is when a certificate should be renewed: two thirds into its life.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// Run renews the host credential and keeps the CNI credential until ctx
// ends. A failed renewal is retried with backoff (at most a minute apart)
// while the certificate is still valid.
func (e *Enrollment) Run(ctx context.Context) {
	backoff := time.Second
	for {
		next, err := e.step(ctx)
		if err != nil {
			e.cfg.Log.Warn("certificate renewal failed; retrying", "err", err, "in", backoff)
			next = e.cfg.Now().Add(backoff)
			backoff = min(2*backoff, time.Minute)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(max(next.Sub(e.cfg.Now()), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// step renews what is due and returns when to look again.
func (e *Enrollment) step(ctx context.Context) (time.Time, error) {
	now := e.cfg.Now()
	if leaf := e.kp.Leaf(); !now.Before(renewAt(leaf)) {
		if err := e.renewHost(ctx); err != nil {
			return time.Time{}, err
		}
	}
	next := renewAt(e.kp.Leaf())
	if e.cfg.CNIPath != "" {
		at, err := e.ensureCNI(ctx, now)
		if err != nil {
			return time.Time{}, err
		}
		if at.Before(next) {
			next = at
		}
	}
	return next, nil
}

// issue asks romanad for a certificate for id with a new key.
func (e *Enrollment) issue(ctx context.Context, id pki.Identity) (api.CertResponse, []byte, error) {
	key, err := pki.NewKey()
	if err != nil {
		return api.CertResponse{}, nil, err
	}
	csr, err := pki.NewCSR(key, id.String())
	if err != nil {
		return api.CertResponse{}, nil, err
	}
	resp, err := e.Client.RequestCert(ctx, api.CertRequest{Identity: id.String(), CSR: string(csr)})
	if err != nil {
		return api.CertResponse{}, nil, fmt.Errorf("request certificate for %s: %w", id, err)
	}
	keyPEM, err := pki.EncodeKey(key)
	return resp, keyPEM, err
}

func (e *Enrollment) renewHost(ctx context.Context) error {
	resp, keyPEM, err := e.issue(ctx, e.Identity)
	if err != nil {
		return err
	}
	cred := *e.cred
	cred.Cert, cred.Key, cred.CA = resp.Cert, string(keyPEM), resp.CA
	// The file first: a crash after it keeps the new certificate.
	if err := cred.Save(e.cfg.Path); err != nil {
		return err
	}
	if err := e.kp.Set([]byte(cred.Cert), keyPEM); err != nil {
		return err
	}
	e.cred = &cred
	// Close every connection made with the old certificate, busy ones (the
	// watch stream) too: the HTTP transport would otherwise go on using
	// them, and once the old certificate expires romanad refuses every
	// request on them, the renewals too, for good. The agent re-reads a
	// snapshot and watches again with the new one.
	e.conns.closeAll()
	e.cfg.Log.Info("renewed host certificate", "identity", resp.Identity, "serial", resp.Serial, "notAfter", resp.NotAfter)
	select {
	case e.renewed <- struct{}{}:
	default:
	}
	return nil
}

// ensureCNI keeps a valid cni:HOST credential at CNIPath and returns when
// it is due for renewal.
func (e *Enrollment) ensureCNI(ctx context.Context, now time.Time) (time.Time, error) {
	id := pki.CNI(e.Identity.Host)
	if c, err := pki.LoadCredential(e.cfg.CNIPath); err == nil {
		if leaf, err := c.Leaf(); err == nil && leaf.Subject.CommonName == id.String() && c.Server == e.Server &&
			now.Before(renewAt(leaf)) && c.CA == e.cred.CA {
			return renewAt(leaf), nil
		}
	}
	resp, keyPEM, err := e.issue(ctx, id)
	if err != nil {
		return time.Time{}, err
	}
	cred := &pki.Credential{Server: e.Server, Identity: resp.Identity, CA: resp.CA, Cert: resp.Cert, Key: string(keyPEM)}
	if err := os.MkdirAll(filepath.Dir(e.cfg.CNIPath), 0o700); err != nil {
		return time.Time{}, fmt.Errorf("CNI credential: %w", err)
	}
	if err := cred.Save(e.cfg.CNIPath); err != nil {
		return time.Time{}, err
	}
	e.cfg.Log.Info("wrote CNI credential", "identity", resp.Identity, "serial", resp.Serial, "notAfter", resp.NotAfter, "file", e.cfg.CNIPath)
	leaf, err := cred.Leaf()
	if err != nil {
		return time.Time{}, err
	}
	return renewAt(leaf), nil
}

// conns tracks the connections of an enrollment's client, so that a
// renewal can close them all, as kubelet does when it rotates its client
// certificate (client-go's connrotation). Safe for concurrent use.
type conns struct {
	mu sync.Mutex
	m  map[*trackedConn]struct{}
}

func (cs *conns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 30 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, cs: cs}
	cs.mu.Lock()
	cs.m[tc] = struct{}{}
	cs.mu.Unlock()
	return tc, nil
}

// closeAll closes every open connection; requests and streams on them fail.
func (cs *conns) closeAll() {
	cs.mu.Lock()
	old := cs.m
	cs.m = map[*trackedConn]struct{}{}
	cs.mu.Unlock()
	for c := range old {
		c.Conn.Close()
	}
}

// trackedConn is a connection that leaves its conns when closed.
type trackedConn struct {
	net.Conn
	cs *conns
}

func (c *trackedConn) Close() error {
	c.cs.mu.Lock()
	delete(c.cs.m, c)
	c.cs.mu.Unlock()
	return c.Conn.Close()
}

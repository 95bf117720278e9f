// Package store opens romanad's etcd v3 store: an embedded etcd server in a
// local data directory, reachable only with a client certificate that only
// romanad holds, or an external cluster, behind one *clientv3.Client.
package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config selects the store. With Endpoints empty an embedded etcd runs in
// DataDir, listening on loopback only and requiring mutual TLS with the
// certificates Open keeps in DataDir/tls (see TLSDir); otherwise romanad
// connects to the external cluster at Endpoints, with TLS when CertFile,
// KeyFile or CAFile is set. CertFile, KeyFile and CAFile apply to an external
// cluster only.
type Config struct {
	DataDir   string
	Endpoints []string
	CertFile  string
	KeyFile   string
	CAFile    string
	// DialTimeout bounds the initial connection (default 5s).
	DialTimeout time.Duration
	// UnsafeNoFsync disables fsync in the embedded server. Tests only: a
	// crash can lose acknowledged writes.
	UnsafeNoFsync bool
	// Logger receives the embedded server's warnings and errors (default: discard).
	Logger *slog.Logger
}

// Store is an open etcd connection, plus the embedded server when there is one.
type Store struct {
	Client   *clientv3.Client
	embedded *embed.Etcd
	// Endpoint is the embedded server's client URL, "https://127.0.0.1:PORT"
	// ("" for an external cluster). It answers only clients that present
	// TLSDir's client certificate.
	Endpoint string

	stopRenew chan struct{} // closed by Close; nil for an external cluster
	renewDone sync.WaitGroup
	lock      *os.File // the data directory's lock (lockDataDir); nil for an external cluster
	closeOnce sync.Once
}

// Open starts the embedded server (if configured) and connects to etcd. The
// connection is checked with one read before Open returns.
func Open(ctx context.Context, cfg Config) (_ *Store, retErr error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	s := &Store{}
	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		if cfg.DataDir == "" {
			return nil, errors.New("open store: set a data directory for the embedded etcd or external etcd endpoints")
		}
		if cfg.CertFile != "" || cfg.KeyFile != "" || cfg.CAFile != "" {
			return nil, errors.New("open store: --etcd-cert, --etcd-key and --etcd-ca apply to an external etcd (--etcd-endpoints) only")
		}
		lock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		s.lock = lock
		defer func() {
			if retErr != nil {
				lock.Close()
			}
		}()
		tdir := TLSDir(cfg.DataDir)
		if err := ensureTLS(tdir, time.Now(), log); err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		e, err := startEmbedded(ctx, cfg, tdir, log)
		if err != nil {
			return nil, err
		}
		s.embedded = e
		s.Endpoint = "https://" + e.Clients[0].Addr().String()
		endpoints = []string{s.Endpoint}
		defer func() {
			if retErr != nil {
				e.Close()
			}
		}()
		cfg.CertFile = filepath.Join(tdir, clientCertFile)
		cfg.KeyFile = filepath.Join(tdir, clientKeyFile)
		cfg.CAFile = filepath.Join(tdir, caCertFile)
	}
	tlsCfg, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         tlsCfg,
		Logger:      zap.New(newSlogCore(log.With("component", "etcd-client"), zap.WarnLevel)),
		Context:     context.WithoutCancel(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	s.Client = cli
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "/romana-probe", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	if s.embedded != nil {
		s.stopRenew = make(chan struct{})
		s.renewDone.Add(1)
		go func() {
			defer s.renewDone.Done()
			renewLoop(TLSDir(cfg.DataDir), s.stopRenew, log)
		}()
	}
	return s, nil
}

// Close closes the client and stops the embedded server, if any. Calls
// after the first do nothing.
func (s *Store) Close() error {
	err := errors.New("store already closed")
	s.closeOnce.Do(func() { err = s.close() })
	return err
}

func (s *Store) close() error {
	if s.stopRenew != nil {
		close(s.stopRenew)
		s.renewDone.Wait()
	}
	err := s.Client.Close()
	if s.embedded != nil {
		s.embedded.Close()
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
	return err
}

// lockFile is the file in the data directory that a running store holds
// an exclusive flock on, and whose content is the holder's PID.
const lockFile = "romanad.lock"

// lockDataDir takes the data directory for this process: an exclusive,
// non-blocking flock on its lock file, which the kernel releases when the
// holder exits however it exits. A directory already held is an error that
// names the holder at once; without it a second romanad would wait forever
// inside etcd for the database's own lock.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: create data dir: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by %s, which holds %s: stop it first, or give this romanad another --data-dir", dir, holder(path), path)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	// The PID only informs a second romanad's error message: the flock is the lock.
	if f.Truncate(0) == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// holder describes the process whose PID the lock file holds.
func holder(path string) string {
	b, _ := os.ReadFile(path)
	pid := strings.TrimSpace(string(b))
	if _, err := strconv.Atoi(pid); err != nil {
		return "another process"
	}
	if comm, err := os.ReadFile("/proc/" + pid + "/comm"); err == nil {
		return fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm)))
	}
	return "pid " + pid
}

// Embedded reports whether the store runs an embedded etcd.
func (s *Store) Embedded() bool { return s.embedded != nil }

func clientTLS(cfg Config) (*tls.Config, error) {
	if cfg.CertFile == "" && cfg.KeyFile == "" && cfg.CAFile == "" {
		return nil, nil
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("etcd TLS: set both --etcd-cert and --etcd-key, or neither")
	}
	info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
	t, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %w", err)
	}
	return t, nil
}

// startEmbedded starts etcd in cfg.DataDir with the certificates in tdir
// (written by ensureTLS).
func startEmbedded(ctx context.Context, cfg Config, tdir string, log *slog.Logger) (*embed.Etcd, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: create data dir: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = "romanad"
	ec.Dir = cfg.DataDir
	// Loopback only, on ports the kernel picks, and both listeners refuse
	// any TLS client without a certificate from tdir's CA: on loopback every
	// local user could connect otherwise. The peer URL is never dialled
	// (single member) and stays the same string across restarts, so the
	// member id stored in the data dir keeps matching (a data dir created
	// with the former "http://127.0.0.1:0" restarts too: etcd takes the
	// member from its WAL, not from these URLs).
	//
	// Not unix sockets: etcd 3.7 listens for a unix peer URL on u.Host, so
	// an absolute path (which url.URL keeps in Path) becomes an abstract
	// socket that any local user can reach, and with no TLS at all.
	loop := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	ec.ListenClientUrls = []url.URL{loop}
	ec.AdvertiseClientUrls = []url.URL{loop}
	ec.ListenPeerUrls = []url.URL{loop}
	ec.AdvertisePeerUrls = []url.URL{loop}
	ec.InitialCluster = ec.Name + "=" + loop.String()
	ec.InitialClusterToken = "romanad"
	server := transport.TLSInfo{
		CertFile:       filepath.Join(tdir, serverCertFile),
		KeyFile:        filepath.Join(tdir, serverKeyFile),
		TrustedCAFile:  filepath.Join(tdir, caCertFile),
		ClientCertAuth: true,
	}
	ec.PeerTLSInfo = server
	ec.ClientTLSInfo = server
	// Of the CA's certificates, only romanad's client certificate may talk
	// to the client port (not the server's own, which also serves peers).
	ec.ClientTLSInfo.AllowedCNs = []string{clientCN}
	ec.ListenMetricsUrls = nil
	ec.Metrics = "basic"
	// Keep a day of history for resuming watches, compact the rest.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "24h"
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(log.With("component", "etcd"), zap.ErrorLevel)))
	// StartEtcd itself can block (on the database's file lock, say): wait
	// for it in the background, so that ctx (SIGTERM) is obeyed; an etcd
	// that starts after Open has given up is closed.
	type started struct {
		e   *embed.Etcd
		err error
	}
	startc := make(chan started, 1)
	var (
		mu        sync.Mutex
		abandoned bool
	)
	go func() {
		e, err := embed.StartEtcd(ec)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if err == nil {
				e.Close()
			}
			return
		}
		startc <- started{e, err}
	}()
	var e *embed.Etcd
	select {
	case st := <-startc:
		if st.err != nil {
			return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, st.err)
		}
		e = st.e
	case <-ctx.Done():
		mu.Lock()
		abandoned = true
		mu.Unlock()
		select { // it may have started just now
		case st := <-startc:
			if st.err == nil {
				st.e.Close()
			}
		default:
		}
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, ctx.Err())
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: not ready after 60s", cfg.DataDir)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, ctx.Err())
	}
}

// The embedded etcd's certificates, in TLSDir(DataDir). The CA exists only
// for this one etcd: nothing else trusts it and it signs nothing else.
const (
	caCertFile     = "ca.crt"
	caKeyFile      = "ca.key"
	serverCertFile = "server.crt" // etcd's client and peer listeners
	serverKeyFile  = "server.key"
	clientCertFile = "client.crt" // romanad's etcd client
	clientKeyFile  = "client.key"

	clientCN = "romanad"

	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// renewBefore: a certificate that expires sooner than this is replaced.
	renewBefore = 30 * 24 * time.Hour
	// renewEvery: how often a running store checks its certificates.
	renewEvery = 24 * time.Hour
)

// TLSDir is the directory (mode 0700) of the embedded etcd's CA, server and
// client certificates and keys (mode 0600) in dataDir.
func TLSDir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// ensureTLS makes dir hold a valid CA, server certificate and client
// certificate, none expiring within renewBefore of now: it keeps what is
// valid and replaces the rest. A new CA replaces both leaves. Run it
// before etcd starts: etcd reads the CA once, at start.
func ensureTLS(dir string, now time.Time, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("restrict %s: %w", dir, err)
	}
	ca, caKey, err := loadCA(dir)
	if err == nil && now.Add(renewBefore).After(ca.NotAfter) {
		err = fmt.Errorf("expires %s", ca.NotAfter.Format(time.RFC3339))
	}
	if err != nil {
		log.Info("creating etcd CA", "dir", dir, "reason", err)
		if ca, caKey, err = newCA(dir, now); err != nil {
			return err
		}
	}
	return ensureLeaves(dir, ca, caKey, now, log)
}

// renewLoop replaces the leaf certificates in dir shortly before they
// expire, until stop is closed. etcd and its client read the leaf files at
// every TLS handshake, so the new ones take effect without a restart. A CA
// near its end is replaced at the next start only (etcd keeps the CA it
// started with).
func renewLoop(dir string, stop <-chan struct{}, log *slog.Logger) {
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		ca, caKey, err := loadCA(dir)
		if err != nil {
			log.Error("etcd certificates: cannot renew", "err", err)
			continue
		}
		if now.Add(renewBefore).After(ca.NotAfter) {
			log.Warn("etcd CA expires soon: restart romanad to replace it", "dir", dir, "notAfter", ca.NotAfter)
		}
		if err := ensureLeaves(dir, ca, caKey, now, log); err != nil {
			log.Error("etcd certificates: cannot renew", "err", err)
		}
	}
}

// leaf describes one leaf certificate that ensureLeaves keeps valid.
type leaf struct {
	cert, key string
	cn        string
	usage     []x509.ExtKeyUsage
	hosts     []string // names and IPs the certificate must be valid for
}

var leaves = []leaf{
	// The peer listener uses this certificate as a client too.
	{serverCertFile, serverKeyFile, "romanad-etcd",
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []string{"127.0.0.1", "localhost"}},
	{clientCertFile, clientKeyFile, clientCN, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil},
}

func ensureLeaves(dir string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time, log *slog.Logger) error {
	for _, l := range leaves {
		err := checkLeaf(dir, l, ca, now)
		if err == nil {
			continue
		}
		log.Info("issuing etcd certificate", "file", filepath.Join(dir, l.cert), "reason", err)
		if err := issueLeaf(dir, l, ca, caKey, now); err != nil {
			return err
		}
	}
	return nil
}

// checkLeaf says why l's files are not a usable certificate (nil when they are).
func checkLeaf(dir string, l leaf, ca *x509.Certificate, now time.Time) error {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, l.cert), filepath.Join(dir, l.key))
	if err != nil {
		return err
	}
	cert := pair.Leaf
	if cert == nil {
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return err
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: l.usage}); err != nil {
		return err
	}
	for _, h := range l.hosts {
		if err := cert.VerifyHostname(h); err != nil {
			return err
		}
	}
	if now.Add(renewBefore).After(cert.NotAfter) {
		return fmt.Errorf("expires %s", cert.NotAfter.Format(time.RFC3339))
	}
	return os.Chmod(filepath.Join(dir, l.key), 0o600)
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !ca.IsCA {
		return nil, nil, fmt.Errorf("%s is not an ECDSA CA", filepath.Join(dir, caCertFile))
	}
	return ca, key, os.Chmod(filepath.Join(dir, caKeyFile), 0o600)
}

func newCA(dir string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate etcd CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "romanad embedded etcd CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create etcd CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	// Key first: a crash in between leaves a CA that does not load, and the
	// next start makes a new one.
	if err := writeKey(filepath.Join(dir, caKeyFile), key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(filepath.Join(dir, caCertFile), "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

func issueLeaf(dir string, l leaf, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key for %s: %w", l.cert, err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	notAfter := now.Add(leafValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  l.usage,
	}
	for _, h := range l.hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("issue %s: %w", l.cert, err)
	}
	// etcd reads the pair at every handshake: each file is replaced whole
	// (rename), though a handshake between the two renames can still fail
	// once and be retried.
	if err := writeKey(filepath.Join(dir, l.key), key); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, l.cert), "CERTIFICATE", der, 0o644)
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM replaces path with one PEM block, atomically (temporary file,
// fsync, rename). The temporary file is created 0600 and gets mode only
// once written.
func writePEM(path, typ string, der []byte, mode os.FileMode) (retErr error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

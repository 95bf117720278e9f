// Package store opens romanad's etcd v3 store: an embedded etcd server in a
// local data directory, or an external cluster, behind one *clientv3.Client.
package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config selects the store. With Endpoints empty an embedded etcd runs in
// DataDir, listening on loopback only; otherwise romanad connects to the
// external cluster at Endpoints, with TLS when CertFile, KeyFile or CAFile is set.
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
	// Endpoint is the embedded server's client URL ("" for an external cluster).
	Endpoint string
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
		e, err := startEmbedded(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		s.embedded = e
		s.Endpoint = "http://" + e.Clients[0].Addr().String()
		endpoints = []string{s.Endpoint}
		defer func() {
			if retErr != nil {
				e.Close()
			}
		}()
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
	return s, nil
}

// Close closes the client and stops the embedded server, if any.
func (s *Store) Close() error {
	err := s.Client.Close()
	if s.embedded != nil {
		s.embedded.Close()
	}
	return err
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

func startEmbedded(ctx context.Context, cfg Config, log *slog.Logger) (*embed.Etcd, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: create data dir: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = "romanad"
	ec.Dir = cfg.DataDir
	// Loopback only, on ports the kernel picks. The peer URL is never dialled
	// (single member) and stays the same string across restarts, so the
	// member id stored in the data dir keeps matching.
	loop := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	ec.ListenClientUrls = []url.URL{loop}
	ec.AdvertiseClientUrls = []url.URL{loop}
	ec.ListenPeerUrls = []url.URL{loop}
	ec.AdvertisePeerUrls = []url.URL{loop}
	ec.InitialCluster = ec.Name + "=" + loop.String()
	ec.InitialClusterToken = "romanad"
	ec.ListenMetricsUrls = nil
	ec.Metrics = "basic"
	// Keep a day of history for resuming watches, compact the rest.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "24h"
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(log.With("component", "etcd"), zap.ErrorLevel)))
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.DataDir, err)
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

// Command romanad is Romana's control-plane daemon: it keeps networks,
// hosts, tenants, segments, addresses and policies in etcd and serves them
// over the /v1 REST API on TCP (mutual TLS only) and a unix socket (root).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server"
	"github.com/romana/romana/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdline.Exit(os.Stderr, "romanad", err))
}

// execute runs romanad's command line (package cmdline): help and
// --version go to stdout, logs to stderr.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cmdline.NewRomanad(func(ctx context.Context, f *cmdline.Romanad) error { return serve(ctx, f, stderr) })
	return cmdline.Execute(ctx, cmd, args, stdout, stderr)
}

// run is execute with help on stderr (tests).
func run(ctx context.Context, args []string, stderr io.Writer) error {
	return execute(ctx, args, stderr, stderr)
}

// serve is romanad: it runs until ctx ends.
func serve(ctx context.Context, f *cmdline.Romanad, stderr io.Writer) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return cmdline.Usagef("--log-level %q: use debug, info, warn or error", f.LogLevel)
	}
	if f.Listen == "" && f.Socket == "" {
		return cmdline.Usagef("--listen and --socket are both empty: nothing to serve on")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if f.MaxConnections < 1 || f.WatchBacklog < 64<<10 {
		return cmdline.Usagef("--max-connections %d, --watch-backlog %d: at least 1 and 65536", f.MaxConnections, f.WatchBacklog)
	}
	if f.WatchHistory != 0 && f.WatchHistory < 64<<10 {
		return cmdline.Usagef("--watch-history %d: 0 or at least 65536", f.WatchHistory)
	}
	if f.HostCertValidity < time.Minute {
		return cmdline.Usagef("--host-cert-validity %s: at least 1m", f.HostCertValidity)
	}
	gid := -1
	if f.SocketGroup != "" {
		g, err := user.LookupGroup(f.SocketGroup)
		if err != nil {
			return fmt.Errorf("--socket-group: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	setup := pki.ServerSetup{Dir: f.PKIDir, CACert: f.CACert, CAKey: f.CAKey, ServingCert: f.TLSCert, ServingKey: f.TLSKey,
		ClientCA: f.ClientCA, Names: advertiseNames(f.Advertise, f.Listen), AdminConfig: f.AdminConfig}
	setup.Server = serverURL(setup.Names[0], f.Listen)
	var tlsState *pki.ServerTLS
	if f.Listen != "" {
		var err error
		if tlsState, err = setup.Setup(time.Now()); err != nil {
			return fmt.Errorf("TLS setup: %w", err)
		}
		if tlsState.NewCA {
			log.Info("created Romana CA", "dir", f.PKIDir)
		}
		if tlsState.AdminWritten {
			log.Info("wrote admin credential", "file", f.AdminConfig, "server", setup.Server)
		}
	}

	cfg := store.Config{DataDir: f.DataDir, CertFile: f.EtcdCert, KeyFile: f.EtcdKey, CAFile: f.EtcdCA, Logger: log}
	if f.EtcdEndpoints != "" {
		cfg.Endpoints = strings.Split(f.EtcdEndpoints, ",")
		cfg.DataDir = ""
	}
	st, err := store.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if st.Embedded() {
		log.Info("embedded etcd ready", "dataDir", cfg.DataDir, "endpoint", st.Endpoint)
	} else {
		log.Info("connected to etcd", "endpoints", cfg.Endpoints)
	}
	reg := ipam.New(st.Client, ipam.Options{Prefix: f.EtcdPrefix, Logger: log, WatchBacklog: f.WatchBacklog, WatchHistory: f.WatchHistory})
	if err := reg.Repair(ctx); err != nil {
		return fmt.Errorf("repair store: %w", err)
	}
	var srvTLS *server.TLSConfig
	if tlsState != nil {
		srvTLS = &server.TLSConfig{Serving: tlsState.Serving, ClientCAs: tlsState.ClientCAs, CA: tlsState.CA, HostValidity: f.HostCertValidity}
		if c := tlsState.AdminCert; c != nil {
			if err := reg.RecordCert(ctx, api.CertRecord{Serial: pki.Serial(c), Identity: pki.Admin.String(),
				NotAfter: c.NotAfter.UTC(), IssuedBy: "romanad first start (" + f.AdminConfig + ")"}); err != nil {
				return err
			}
		}
		if f.TLSCert == "" {
			go renewServing(ctx, log, setup, tlsState)
		}
	}

	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	if f.Listen != "" {
		ln, err := net.Listen("tcp", f.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", f.Listen, err)
		}
		lns = append(lns, ln)
	}
	if f.Socket != "" {
		ln, err := server.ListenUnixGroup(f.Socket, gid)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	srv := server.New(server.Config{Registry: reg, Logger: log, TLS: srvTLS, MaxConns: f.MaxConnections})
	err = srv.Serve(ctx, lns...)
	log.Info("romanad stopped")
	return err
}

// advertiseNames returns the serving certificate's names: --advertise, or
// the hostname, localhost, the loopback addresses and a specific --listen host.
func advertiseNames(advertise, listen string) []string {
	if advertise != "" {
		var out []string
		for _, n := range strings.Split(advertise, ",") {
			if n = strings.TrimSpace(n); n != "" {
				out = append(out, n)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	var out []string
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			out = append(out, h)
		}
	}
	if hn, err := os.Hostname(); err == nil && hn != "" {
		out = append(out, hn)
	}
	return append(out, "localhost", "127.0.0.1", "::1")
}

// serverURL is the https URL of name at --listen's port.
func serverURL(name, listen string) string {
	port := "9600"
	if _, p, err := net.SplitHostPort(listen); err == nil && p != "" && p != "0" {
		port = p
	}
	return "https://" + net.JoinHostPort(name, port)
}

// renewServing re-issues romanad's own serving certificate when two thirds
// of its lifetime have passed; new handshakes use the new one.
func renewServing(ctx context.Context, log *slog.Logger, setup pki.ServerSetup, st *pki.ServerTLS) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		leaf := st.Serving.Leaf()
		if time.Until(leaf.NotAfter) > leaf.NotAfter.Sub(leaf.NotBefore)/3 {
			continue
		}
		kp, err := setup.IssueServing(st.CA, time.Now())
		if err != nil {
			log.Error("renew serving certificate", "err", err)
			continue
		}
		st.Serving.Swap(kp)
		log.Info("renewed serving certificate", "notAfter", st.Serving.Leaf().NotAfter)
	}
}

// Command romanad is Romana's control-plane daemon: it keeps networks,
// hosts, tenants, segments, addresses and policies in etcd and serves them
// over the /v1 REST API on TCP and a unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/romana/romana/ipam"
	"github.com/romana/romana/server"
	"github.com/romana/romana/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "romanad:", err)
		os.Exit(1)
	}
}

const usage = `romanad - Romana control-plane daemon

Usage: romanad [flags]

romanad stores Romana's state (networks, hosts, tenants, segments, addresses,
policies) in etcd and serves the /v1 REST API that the romana CLI, the host
agents and the CNI plugin use. Only romanad talks to etcd.

By default it runs an embedded single-member etcd in --data-dir; give
--etcd-endpoints to use an external etcd cluster instead.

Examples:
  # embedded store, API on loopback TCP and the default unix socket
  romanad

  # external etcd over TLS, API reachable from other hosts
  romanad --listen 0.0.0.0:9600 \
    --etcd-endpoints https://10.0.0.5:2379,https://10.0.0.6:2379 \
    --etcd-cert /etc/romana/etcd.crt --etcd-key /etc/romana/etcd.key --etcd-ca /etc/romana/ca.crt

Flags:
`

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("romanad", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen    = fs.String("listen", "127.0.0.1:9600", "TCP `address` of the API (\"\" disables TCP)")
		socket    = fs.String("socket", "/run/romana/romanad.sock", "unix socket `path` of the API (\"\" disables it); its directory is created and a stale socket removed")
		dataDir   = fs.String("data-dir", "/var/lib/romana/etcd", "`directory` of the embedded etcd (unused with --etcd-endpoints)")
		endpoints = fs.String("etcd-endpoints", "", "comma-separated `URLs` of an external etcd cluster; empty runs the embedded etcd")
		cert      = fs.String("etcd-cert", "", "client certificate `file` for the external etcd")
		key       = fs.String("etcd-key", "", "client key `file` for the external etcd")
		ca        = fs.String("etcd-ca", "", "CA certificate `file` that signed the external etcd's certificates")
		prefix    = fs.String("etcd-prefix", ipam.DefaultPrefix, "etcd key `prefix` of Romana's state")
		logLevel  = fs.String("log-level", "info", "log `level`: debug (logs every request), info, warn or error")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	if *listen == "" && *socket == "" {
		return errors.New("--listen and --socket are both empty: nothing to serve on")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	cfg := store.Config{DataDir: *dataDir, CertFile: *cert, KeyFile: *key, CAFile: *ca, Logger: log}
	if *endpoints != "" {
		cfg.Endpoints = strings.Split(*endpoints, ",")
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
	reg := ipam.New(st.Client, ipam.Options{Prefix: *prefix, Logger: log})
	if err := reg.Repair(ctx); err != nil {
		return fmt.Errorf("repair store: %w", err)
	}

	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", *listen, err)
		}
		lns = append(lns, ln)
	}
	if *socket != "" {
		ln, err := server.ListenUnix(*socket)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	srv := server.New(server.Config{Registry: reg, Logger: log})
	err = srv.Serve(ctx, lns...)
	log.Info("romanad stopped")
	return err
}

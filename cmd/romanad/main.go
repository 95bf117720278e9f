// Command romanad is Romana's control-plane daemon: it keeps networks,
// hosts, tenants, segments, addresses and policies in etcd and serves them
// over the /v1 REST API on TCP (mutual TLS only) and a unix socket (root).
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
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/pki"
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

By default it runs an embedded single-member etcd in --data-dir, reachable
only by romanad (mutual TLS with a certificate in the data dir); give
--etcd-endpoints to use an external etcd cluster instead.

Security: TCP is served over TLS 1.3 only and every request needs a client
certificate signed by Romana's CA (identities admin, viewer, host:NAME,
cni:NAME; see docs/security.md). On first start romanad creates the CA in
--pki-dir, a serving certificate for --advertise, and the admin credential
--admin-config that the romana CLI reads by default. The unix socket is for
root on this machine (mode 0600) and is admin. Hosts join with a one-time
token: "romana host add NAME --ip IP" prints it, then on the host
"romana-agent --join TOKEN --server https://ROMANAD:9600 --host NAME".

Examples:
  # embedded store, API on loopback TLS and the default unix socket
  romanad

  # reachable by agents on other hosts at 10.0.0.5
  romanad --listen 0.0.0.0:9600 --advertise romanad.example,10.0.0.5

  # external etcd over TLS and an external CA
  romanad --listen 0.0.0.0:9600 --ca-cert /etc/romana/ca.crt --ca-key /etc/romana/ca.key \
    --etcd-endpoints https://10.0.0.5:2379,https://10.0.0.6:2379 \
    --etcd-cert /etc/romana/etcd.crt --etcd-key /etc/romana/etcd.key --etcd-ca /etc/romana/etcd-ca.crt

Flags:
`

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("romanad", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen    = fs.String("listen", "127.0.0.1:9600", "TCP `address` of the API, served over mutual TLS (\"\" disables TCP)")
		socket    = fs.String("socket", "/run/romana/romanad.sock", "unix socket `path` of the API for root, mode 0600 (\"\" disables it); its directory is created and a stale socket removed")
		sockGroup = fs.String("socket-group", "", "`group` allowed to use the unix socket too (mode 0660); its members are admin")
		pkiDir    = fs.String("pki-dir", "/var/lib/romana/pki", "`directory` of Romana's CA (created on first start, key mode 0600)")
		advertise = fs.String("advertise", "", "comma-separated DNS `names` and IPs of the serving certificate (default: the hostname, localhost, 127.0.0.1, ::1 and the --listen host); the first is the URL written into --admin-config")
		adminConf = fs.String("admin-config", pki.DefaultAdminConfig, "`file` to write the admin credential to when it does not exist (\"\" writes none)")
		caCert    = fs.String("ca-cert", "", "external CA certificate `file` to sign with instead of --pki-dir's (with --ca-key)")
		caKey     = fs.String("ca-key", "", "external CA key `file` (with --ca-cert)")
		tlsCert   = fs.String("tls-cert", "", "externally issued serving certificate `file` (with --tls-key); default: issued by the CA")
		tlsKey    = fs.String("tls-key", "", "serving key `file` (with --tls-cert)")
		clientCA  = fs.String("client-ca", "", "extra CA certificates `file` (PEM) whose client certificates are accepted")
		hostValid = fs.Duration("host-cert-validity", pki.HostValidity, "lifetime of host and CNI certificates; agents renew at two thirds")
		dataDir   = fs.String("data-dir", "/var/lib/romana/etcd", "`directory` of the embedded etcd (unused with --etcd-endpoints)")
		endpoints = fs.String("etcd-endpoints", "", "comma-separated `URLs` of an external etcd cluster; empty runs the embedded etcd")
		cert      = fs.String("etcd-cert", "", "client certificate `file` for the external etcd")
		key       = fs.String("etcd-key", "", "client key `file` for the external etcd")
		ca        = fs.String("etcd-ca", "", "CA certificate `file` that signed the external etcd's certificates")
		prefix    = fs.String("etcd-prefix", ipam.DefaultPrefix, "etcd key `prefix` of Romana's state")
		logLevel  = fs.String("log-level", "info", "log `level`: debug (logs every request), info, warn or error")
		maxConns  = fs.Int("max-connections", server.DefaultMaxConns, "open connections each listener holds at most (`n`); further clients wait until one closes")
		backlog   = fs.Int("watch-backlog", ipam.DefaultWatchBacklog, "`bytes` of events a watch stream may fall behind before it is cut off (the client resumes)")
		history   = fs.Int("watch-history", 0, "`bytes` of recent events kept in memory for watch streams to start or resume from without an etcd watch of their own (0: twice --watch-backlog)")
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
	if *maxConns < 1 || *backlog < 64<<10 {
		return fmt.Errorf("--max-connections %d, --watch-backlog %d: at least 1 and 65536", *maxConns, *backlog)
	}
	if *history != 0 && *history < 64<<10 {
		return fmt.Errorf("--watch-history %d: 0 or at least 65536", *history)
	}
	if *hostValid < time.Minute {
		return fmt.Errorf("--host-cert-validity %s: at least 1m", *hostValid)
	}
	gid := -1
	if *sockGroup != "" {
		g, err := user.LookupGroup(*sockGroup)
		if err != nil {
			return fmt.Errorf("--socket-group: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	setup := pki.ServerSetup{Dir: *pkiDir, CACert: *caCert, CAKey: *caKey, ServingCert: *tlsCert, ServingKey: *tlsKey,
		ClientCA: *clientCA, Names: advertiseNames(*advertise, *listen), AdminConfig: *adminConf}
	setup.Server = serverURL(setup.Names[0], *listen)
	var tlsState *pki.ServerTLS
	if *listen != "" {
		var err error
		if tlsState, err = setup.Setup(time.Now()); err != nil {
			return fmt.Errorf("TLS setup: %w", err)
		}
		if tlsState.NewCA {
			log.Info("created Romana CA", "dir", *pkiDir)
		}
		if tlsState.AdminWritten {
			log.Info("wrote admin credential", "file", *adminConf, "server", setup.Server)
		}
	}

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
	reg := ipam.New(st.Client, ipam.Options{Prefix: *prefix, Logger: log, WatchBacklog: *backlog, WatchHistory: *history})
	if err := reg.Repair(ctx); err != nil {
		return fmt.Errorf("repair store: %w", err)
	}
	var srvTLS *server.TLSConfig
	if tlsState != nil {
		srvTLS = &server.TLSConfig{Serving: tlsState.Serving, ClientCAs: tlsState.ClientCAs, CA: tlsState.CA, HostValidity: *hostValid}
		if c := tlsState.AdminCert; c != nil {
			if err := reg.RecordCert(ctx, api.CertRecord{Serial: pki.Serial(c), Identity: pki.Admin.String(),
				NotAfter: c.NotAfter.UTC(), IssuedBy: "romanad first start (" + *adminConf + ")"}); err != nil {
				return err
			}
		}
		if *tlsCert == "" {
			go renewServing(ctx, log, setup, tlsState)
		}
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
		ln, err := server.ListenUnixGroup(*socket, gid)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	srv := server.New(server.Config{Registry: reg, Logger: log, TLS: srvTLS, MaxConns: *maxConns})
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

// Command romana-agent is Romana's host agent: it follows romanad and keeps
// this host's routes and tenant isolation (nftables) equal to the desired
// state. It acts in its own network namespace. The logic is in package agent;
// its identity (join, certificate renewal, CNI credential) in package enroll.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/romana/romana/agent"
	"github.com/romana/romana/client"
	"github.com/romana/romana/enroll"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "romana-agent:", err)
		os.Exit(1)
	}
}

const usage = `romana-agent - Romana's host agent

Usage: romana-agent [flags]

The agent follows romanad (a snapshot, then a watch stream) and keeps this
host's routes, tenant isolation and policies (nftables), service-chain
steering and optional BGP sessions equal to the desired state.

It talks to romanad over mutual TLS as identity host:NAME. The first start
joins with a single-use token that "romana host add NAME --ip IP" (or
"romana host token NAME") prints; the agent then keeps its credential in
--config and renews it before it expires, and keeps the CNI plugin's
credential (identity cni:NAME) in --cni-config. As root on romanad's own
machine it may instead use romanad's unix socket (--server unix:///PATH).

Examples:
  # first start on host h3: join, then run
  romana-agent --join rmn1.0123abcd.... --server https://romanad.example:9600 --host h3

  # later starts: the credential in --config says who and where
  romana-agent

  # the token from the environment, not the command line
  ROMANA_JOIN_TOKEN=rmn1.... romana-agent --server https://10.0.0.5:9600

Flags:
`

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("romana-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	host := fs.String("host", "", "this host's name at romanad (default: the credential's, else the hostname)")
	srv := fs.String("server", os.Getenv("ROMANA_SERVER"), "romanad: https://HOST:PORT, or unix:///PATH as root on romanad's machine (env ROMANA_SERVER; default: the credential's)")
	credPath := fs.String("config", "/var/lib/romana/agent/host.conf", "the agent's credential `file` (written by --join, renewed in place)")
	token := fs.String("join", os.Getenv("ROMANA_JOIN_TOKEN"), "single-use join `token` for the first start (env ROMANA_JOIN_TOKEN); ignored once --config exists")
	cniPath := fs.String("cni-config", "/etc/romana/cni.conf", "`file` to keep the CNI plugin's credential (cni:HOST) in (\"\" disables)")
	mode := fs.String("mode", string(hoststate.ModeFlat), "flat: route other hosts' CIDRs via their IPs (one L2 segment); fabric: the fabric routes them")
	resync := fs.Duration("resync", 10*time.Second, "full reconciliation interval (repairs drift)")
	minSync := fs.Duration("min-sync-interval", 10*time.Millisecond, "least time between two applications of changes after a burst of 10 (changes arriving meanwhile are applied together); negative: no limit")
	listen := fs.String("metrics-listen", "127.0.0.1:9601", `address for /metrics and /healthz ("" disables)`)
	cleanup := fs.Bool("cleanup", false, "remove everything the agent owns on this host (table inet romana, routes with protocol 190, BGP-learned routes with protocol 191, the gateway link, chain steering: table inet romana-chain, its ip rules and route tables; with --bgp also what the BGP peers still hold) and exit")
	chainProbe := fs.Duration("chain-probe-interval", time.Second, "health-check period of local service functions (down after 2 failed probes)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	statsEvery := fs.Duration("stats-interval", 5*time.Second, "how often to report policy rule counters to romanad (0 disables)")
	bf := addBGPFlags(fs) // bgp.go
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	m, err := hoststate.ParseMode(*mode)
	if err != nil {
		return fmt.Errorf("--mode: %w", err)
	}

	routes, err := route.New(log)
	if err != nil {
		return err
	}
	fw, err := firewall.New(log)
	if err != nil {
		return err
	}
	steerFW, err := firewall.NewSteer(log)
	if err != nil {
		return err
	}
	steerRoutes, err := route.NewPolicy(log)
	if err != nil {
		return err
	}
	connect := func(ctx context.Context) (*client.Client, string, error) {
		return connectRomanad(ctx, log, *srv, *credPath, *token, *host, *cniPath)
	}
	if *cleanup {
		if err := errors.Join(agent.Cleanup(ctx, routes, fw), bf.cleanup(ctx, log, connect),
			agent.CleanupSteering(ctx, steerFW, steerRoutes)); err != nil {
			return err
		}
		log.Info("cleaned up")
		return nil
	}
	cl, hostName, err := connect(ctx)
	if err != nil {
		return err
	}
	*host = hostName

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := agent.NewMetrics(reg)
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		hs := &http.Server{Handler: metrics.Handler(reg), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer hs.Close()
		log.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
	}
	speaker, stopBGP, err := bf.speaker(log)
	if err != nil {
		return err
	}
	var stats *agent.PolicyStats
	if *statsEvery > 0 {
		stats = &agent.PolicyStats{Counters: fw, Sink: cl, Every: *statsEvery}
	}
	log.Info("romana-agent starting", "version", version.String(), "host", *host, "server", *srv, "mode", m, "resync", *resync, "bgp", *bf.enabled)
	// Service chains: a manager of the agent's loop, with its prober.
	steerer, err := agent.NewSteerer(agent.SteerConfig{Host: *host, Firewall: steerFW, Routes: steerRoutes,
		Prober: route.Pinger{}, ProbeInterval: *chainProbe, Log: log})
	if err != nil {
		return err
	}
	report := &agent.Report{Sink: cl, Sessions: bgpSessions(speaker)} // every half --resync, at least 1 s
	err = agent.Run(ctx, agent.Config{Host: *host, Mode: m, Resync: *resync, Source: cl, Routes: routes, Firewall: fw,
		Log: log, Metrics: metrics, BGP: speaker, Steering: steerer, PolicyStats: stats, Report: report,
		MinSyncInterval: *minSync})
	stopBGP()
	log.Info("romana-agent stopped; host state left in place")
	return err
}

// connectRomanad returns a client of romanad and this host's name: over the
// unix socket as root, or over TLS as host:NAME with the enrollment in
// credPath (joining with token first if needed), renewed in the background
// until ctx ends.
func connectRomanad(ctx context.Context, log *slog.Logger, server, credPath, token, host, cniPath string) (*client.Client, string, error) {
	if strings.HasPrefix(server, "unix://") {
		if host == "" {
			host, _ = os.Hostname()
		}
		if host == "" {
			return nil, "", errors.New("--host: unknown hostname; set --host")
		}
		cl, err := client.New(server)
		if err != nil {
			return nil, "", fmt.Errorf("--server: %w", err)
		}
		return cl, host, nil
	}
	e, err := enroll.Load(ctx, enroll.Config{Server: server, Path: credPath, Token: token, Host: host, CNIPath: cniPath, Log: log})
	if err != nil {
		return nil, "", err
	}
	e.Prepare(ctx)
	go e.Run(ctx)
	log.Info("authenticated", "identity", e.Identity.String(), "server", e.Server, "notAfter", e.Leaf().NotAfter)
	return e.Client, e.Identity.Host, nil
}

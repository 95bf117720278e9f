// Command romana-agent is Romana's host agent: it follows romanad and keeps
// this host's routes and tenant isolation (nftables) equal to the desired
// state. It acts in its own network namespace. The logic is in package agent.
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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/romana/romana/agent"
	"github.com/romana/romana/client"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
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

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("romana-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hostname, _ := os.Hostname()
	server := os.Getenv("ROMANA_SERVER")
	if server == "" {
		server = client.DefaultServer
	}
	host := fs.String("host", hostname, "this host's name at romanad")
	srv := fs.String("server", server, "romanad: http://HOST:PORT or unix:///PATH (env ROMANA_SERVER)")
	mode := fs.String("mode", string(hoststate.ModeFlat), "flat: route other hosts' CIDRs via their IPs (one L2 segment); fabric: the fabric routes them")
	resync := fs.Duration("resync", 10*time.Second, "full reconciliation interval (repairs drift)")
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
	if *cleanup {
		if err := errors.Join(agent.Cleanup(ctx, routes, fw), bf.cleanup(ctx, log, *srv, *host),
			agent.CleanupSteering(ctx, steerFW, steerRoutes)); err != nil {
			return err
		}
		log.Info("cleaned up")
		return nil
	}
	if *host == "" {
		return errors.New("--host: unknown hostname; set --host")
	}
	cl, err := client.New(*srv)
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}

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
	if *statsEvery > 0 {
		go agent.ReportPolicyStats(ctx, *host, *statsEvery, fw, cl, log)
	}
	log.Info("romana-agent starting", "host", *host, "server", *srv, "mode", m, "resync", *resync, "bgp", *bf.enabled)
	// Service chains: a loop of their own, fed by the agent's watch stream.
	steerer, err := agent.NewSteerer(agent.SteerConfig{Host: *host, Firewall: steerFW, Routes: steerRoutes,
		Prober: route.Pinger{}, Resync: *resync, ProbeInterval: *chainProbe, Log: log})
	if err != nil {
		return err
	}
	err = agent.Run(ctx, agent.Config{Host: *host, Mode: m, Resync: *resync, Source: cl, Routes: routes, Firewall: fw,
		Log: log, Metrics: metrics, BGP: speaker, Steering: steerer})
	stopBGP()
	log.Info("romana-agent stopped; host state left in place")
	return err
}

// Command romana-agent is Romana's host agent: it follows romanad and keeps
// this host's routes and tenant isolation (nftables) equal to the desired
// state. It acts in its own network namespace. The logic is in package agent;
// its identity (join, certificate renewal, CNI credential) in package enroll.
package main

import (
	"context"
	"errors"
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
	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/enroll"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdline.Exit(os.Stderr, "romana-agent", err))
}

// execute runs the agent's command line (package cmdline): help and
// --version go to stdout, logs to stderr.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cmdline.NewAgent(func(ctx context.Context, f *cmdline.Agent) error { return runAgent(ctx, f, stderr) })
	cmd.AddCommand(cmdline.NewInstallCNI(func(ctx context.Context, f *cmdline.InstallCNI) error { return installCNI(f, stdout) }))
	return cmdline.Execute(ctx, cmd, args, stdout, stderr)
}

// runAgent is the agent: it runs until ctx ends (or, with --cleanup, until
// the host is clean).
func runAgent(ctx context.Context, f *cmdline.Agent, stderr io.Writer) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return cmdline.Usagef("--log-level: %w", err)
	}
	bf := bgpFlagsOf(&f.BGP) // bgp.go
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	m, err := hoststate.ParseMode(f.Mode)
	if err != nil {
		return cmdline.Usagef("--mode: %w", err)
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
		token := f.Join
		if token == "" && f.JoinFile != "" && f.JoinWait > 0 && !strings.HasPrefix(f.Server, "unix://") {
			if _, err := os.Stat(f.Config); errors.Is(err, os.ErrNotExist) {
				var secret *secretSource
				if f.JoinKube != "" {
					if secret, err = newSecretSource(f.JoinKube, f.Host); err != nil {
						return nil, "", err
					}
				}
				if token, err = waitJoinToken(ctx, log, f.JoinFile, secret, time.Second, f.JoinWait); err != nil {
					return nil, "", err
				}
			}
		}
		return connectRomanad(ctx, log, f.Server, f.Config, token, f.Host, f.CNIConfig)
	}
	if f.Cleanup {
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
	f.Host = hostName

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := agent.NewMetrics(reg)
	if f.MetricsListen != "" {
		ln, err := net.Listen("tcp", f.MetricsListen)
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
	if f.StatsInterval > 0 {
		stats = &agent.PolicyStats{Counters: fw, Sink: cl, Every: f.StatsInterval}
	}
	log.Info("romana-agent starting", "version", version.String(), "host", f.Host, "server", f.Server, "mode", m, "resync", f.Resync, "bgp", *bf.enabled)
	// Service chains: a manager of the agent's loop, with its prober.
	steerer, err := agent.NewSteerer(agent.SteerConfig{Host: f.Host, Firewall: steerFW, Routes: steerRoutes,
		Prober: route.Pinger{}, ProbeInterval: f.ChainProbeInterval, Log: log})
	if err != nil {
		return err
	}
	report := &agent.Report{Sink: cl, Sessions: bgpSessions(speaker)} // every half --resync, at least 1 s
	// The CNI plugin's requests (cni.go).
	settled := &agent.Settled{}
	waitCNI, err := serveCNI(ctx, log, f, cl, settled)
	if err != nil {
		stopBGP()
		return err
	}
	err = agent.Run(ctx, agent.Config{Host: f.Host, Mode: m, Resync: f.Resync, Source: cl, Routes: routes, Firewall: fw,
		Log: log, Metrics: metrics, BGP: speaker, Steering: steerer, PolicyStats: stats, Report: report,
		MinSyncInterval: f.MinSyncInterval, Flowtable: f.Flowtable, Settled: settled})
	stopBGP()
	waitCNI()
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

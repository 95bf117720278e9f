// Command romana-kube is Romana's Kubernetes controller (package kube).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	npclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/kube"
	"github.com/romana/romana/pki"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdline.Exit(os.Stderr, "romana-kube", err))
}

func execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cmdline.NewKube(func(ctx context.Context, f *cmdline.Kube) error { return run(ctx, f, stderr) })
	cmd.AddCommand(cmdline.NewKubeBootstrap(func(ctx context.Context, f *cmdline.KubeBootstrap) error { return runBootstrap(ctx, f, stdout, stderr) }))
	return cmdline.Execute(ctx, cmd, args, stdout, stderr)
}

func run(ctx context.Context, f *cmdline.Kube, stderr io.Writer) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return cmdline.Usagef("--log-level %q: use debug, info, warn or error", f.LogLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg := kube.Config{TenantLabel: f.TenantLabel, SegmentLabel: f.SegmentLabel, IsolationLabel: f.IsolationLabel, Topology: map[string]string{}}
	for _, t := range f.Topology {
		level, label, ok := strings.Cut(t, "=")
		if !ok || level == "" || label == "" {
			return cmdline.Usagef("--topology %q: want LEVEL=NODELABEL, e.g. rack=topology.kubernetes.io/zone", t)
		}
		cfg.Topology[level] = label
	}
	rc, err := restConfig(f.Kubeconfig)
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	rom, err := romanad(f)
	if err != nil {
		return err
	}
	// romanad may not answer yet (installed at the same time): wait for
	// it, saying so, rather than exit into the kubelet's restart back-off.
	var nets []api.Network
	start := time.Now()
	for {
		if nets, err = rom.ListNetworks(ctx); err == nil {
			break
		}
		if time.Since(start) > 5*time.Minute || ctx.Err() != nil {
			return fmt.Errorf("romanad: list networks (tried for %v): %w", time.Since(start).Round(time.Second), err)
		}
		log.Info("waiting for romanad", "err", err, "waited", time.Since(start).Round(time.Second))
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	var pools []netip.Prefix
	for _, n := range nets {
		if p, err := netip.ParsePrefix(n.CIDR); err == nil {
			pools = append(pools, p)
		}
	}
	c := &kube.Controller{Config: cfg, Kube: kc, Compile: kube.Policies(cfg, pools), Log: log,
		Reconciler:  &kube.Reconciler{R: rom, Prefix: kube.DefaultPrefix, NodeGrace: f.NodeGrace},
		MinInterval: f.MinInterval, Resync: f.Resync, Addresses: rom}
	switch ok, err := kube.HasCNP(kc); {
	case err != nil:
		return err
	case ok:
		if c.Policy, err = npclient.NewForConfig(rc); err != nil {
			return fmt.Errorf("network-policy-api client: %w", err)
		}
	default:
		log.Warn("the ClusterNetworkPolicy CRD (policy.networking.k8s.io/v1alpha2) is not installed: following NetworkPolicies only; restart romana-kube after installing it")
	}
	return c.Run(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

func romanad(f *cmdline.Kube) (*client.Client, error) {
	if strings.HasPrefix(f.Server, "unix://") {
		return client.New(f.Server)
	}
	cred, err := pki.LoadCredential(f.Config)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	c, _, err := client.FromCredential(cred, f.Server)
	return c, err
}

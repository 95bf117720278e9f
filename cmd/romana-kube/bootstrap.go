package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/romana/romana/bootstrap"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cmd/internal/cmdline"
)

// runBootstrap is romana-kube bootstrap: package bootstrap does the work.
func runBootstrap(ctx context.Context, f *cmdline.KubeBootstrap, stdout, stderr io.Writer) error {
	if !strings.HasPrefix(f.Romanad, "unix://") {
		return cmdline.Usagef("--romanad %q: want unix:///PATH (romanad's socket, where this is admin)", f.Romanad)
	}
	if !strings.HasPrefix(f.Server, "https://") {
		return cmdline.Usagef("--server %q: want romanad's https://HOST:PORT", f.Server)
	}
	rc, err := restConfig(f.Kubeconfig)
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	rom, err := client.New(f.Romanad)
	if err != nil {
		return err
	}
	cfg := bootstrap.Config{Namespace: f.Namespace, KubeSecret: f.KubeSecret, JoinSecret: f.JoinSecret,
		Server: f.Server, TokenTTL: f.TokenTTL}
	var r bootstrap.Result
	if f.Wait > 0 {
		log := slog.New(slog.NewTextHandler(stderr, nil))
		r, err = bootstrap.Until(ctx, cfg, rom, kc, log, time.Second, f.Wait)
	} else {
		r, err = bootstrap.Run(ctx, cfg, rom, kc)
	}
	if r.KubeIssued {
		fmt.Fprintf(stdout, "wrote romana-kube's credential (identity kube) to Secret %s/%s\n", f.Namespace, f.KubeSecret)
	}
	for _, n := range r.Tokens {
		fmt.Fprintf(stdout, "wrote a join token for node %s to Secret %s/%s\n", n, f.Namespace, f.JoinSecret)
	}
	if err != nil {
		return err
	}
	if len(r.Waiting) > 0 {
		return fmt.Errorf("nodes without a Romana host yet (romana-kube makes them; run again): %s", strings.Join(r.Waiting, ", "))
	}
	return nil
}

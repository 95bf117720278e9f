package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/romana/romana/agent"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/cni"
	"github.com/romana/romana/pki"
)

// serveCNI serves the CNI plugin's requests on --cni-socket (unless "")
// with the agent's own romanad client, until ctx ends; the returned wait
// blocks until the requests in flight are done. An ADD for a Kubernetes
// pod makes the pod routable only once the agent's loop (settled) has
// put its addresses into the address sets that list the pod.
func serveCNI(ctx context.Context, log *slog.Logger, f *cmdline.Agent, cl *client.Client, settled *agent.Settled) (wait func(), err error) {
	if f.CNISocket == "" {
		return func() {}, nil
	}
	ln, err := cni.Listen(f.CNISocket)
	if err != nil {
		return nil, err
	}
	server := f.Server
	if server == "" {
		if cred, err := pki.LoadCredential(f.Config); err == nil {
			server = cred.Server
		}
	}
	srv := &cni.Server{Log: log, Plugin: &cni.Plugin{Log: log, Romanad: cl, Host: f.Host, Server: server, Timeout: 30 * time.Second,
		Settle: settled.Wait}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln, f.CNISocket); err != nil {
			log.Error("CNI socket stopped", "err", err)
		}
	}()
	return func() { <-done }, nil
}

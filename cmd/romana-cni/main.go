// Command romana-cni is Romana's CNI plugin (spec 1.1.0, also 0.4.0 and
// 1.0.0): a container runtime runs it to attach containers to the routed
// Romana network. The logic is in package cni.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/romana/romana/cni"
)

func init() {
	// Namespace switches are per thread: keep main on the thread-group leader.
	runtime.LockOSThread()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	skel.PluginMainFuncs(cni.New(log).Funcs(ctx), cni.Versions, "CNI plugin romana-cni")
}

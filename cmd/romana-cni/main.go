// Command romana-cni is Romana's CNI plugin (spec 1.1.0, also 0.4.0 and
// 1.0.0): a container runtime runs it to attach containers to the routed
// Romana network. The logic is in package cni. Run by hand, without
// CNI_COMMAND, it takes --help and --version (package cmdline).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/cni"
	"github.com/romana/romana/version"
)

func init() {
	// Namespace switches are per thread: keep main on the thread-group leader.
	runtime.LockOSThread()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	plugin := func() {
		skel.PluginMainFuncs(cni.New(log).Funcs(ctx), cni.Versions, "CNI plugin romana-cni "+version.String())
	}
	if os.Getenv(cmdline.CNICommandEnv) != "" {
		plugin() // a container runtime: CNI behaviour only, arguments ignored
		return
	}
	cmd := cmdline.NewCNI(func() error { plugin(); return nil })
	err := cmdline.Execute(ctx, cmd, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdline.Exit(os.Stderr, "romana-cni", err))
}

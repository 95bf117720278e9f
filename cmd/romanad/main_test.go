package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func TestRunServesOnSocketAndStops(t *testing.T) {
	sockDir, err := os.MkdirTemp("", "romt-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "r.sock")
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	args := []string{"--listen", "127.0.0.1:0", "--socket", sock, "--data-dir", dataDir, "--log-level", "warn"}
	go func() { done <- run(ctx, args, &logs) }()
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		cancel()
		t.Fatalf("%v (run: %v)", err, <-done)
	}
	if _, err := c.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind after stop: %v", sock, err)
	}

	// A second run on the same data dir (the socket directory exists now) sees the tenant.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- run(ctx, args, &logs) }()
	if err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"--data-dir", "-etcd-endpoints", "Examples:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help output lacks %q:\n%s", want, out.String())
		}
	}
	for _, args := range [][]string{
		{"--log-level", "loud"},
		{"--listen", "", "--socket", ""},
		{"extra"},
	} {
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}

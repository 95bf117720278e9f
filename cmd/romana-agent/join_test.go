package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWaitJoinToken: the agent waits for its join file (missing, then
// empty, then the token) instead of exiting; it fails after the timeout
// naming the file, and on a file it cannot read.
func TestWaitJoinToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "node1")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	got := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		tok, err := waitJoinToken(ctx, log, file, time.Millisecond, time.Hour)
		got <- tok
		errc <- err
	}()
	// The kubelet writes the Secret's key: first an empty file, then the
	// token (a symlink swap in a real volume; a rename here).
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".tmp")
	if err := os.WriteFile(tmp, []byte("rmn1.abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	if tok, err := <-got, <-errc; tok != "rmn1.abc" || err != nil {
		t.Fatalf("waitJoinToken = %q, %v; want rmn1.abc", tok, err)
	}

	// Never there: a clear error after the timeout.
	_, err := waitJoinToken(ctx, log, filepath.Join(dir, "node2"), time.Millisecond, 20*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no join token in "+filepath.Join(dir, "node2")+" after 20ms") {
		t.Errorf("timeout: err %v", err)
	}
	if !strings.Contains(logs.String(), "waiting for the join token") {
		t.Errorf("nothing said while waiting:\n%s", logs.String())
	}
	// A directory is not "no token yet".
	if _, err := waitJoinToken(ctx, log, dir, time.Millisecond, time.Hour); err == nil {
		t.Error("a directory was waited on")
	}
	// Cancelled.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := waitJoinToken(cctx, log, filepath.Join(dir, "node3"), time.Millisecond, time.Hour); err == nil {
		t.Error("a cancelled wait returned no error")
	}
}

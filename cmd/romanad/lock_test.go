package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/client"
)

// TestSecondRomanadOnDataDir: a second romanad on a data directory a
// running one uses exits within seconds with a message that names the
// running one's process, instead of hanging (it used to wait forever inside
// etcd, deaf to SIGTERM).
func TestSecondRomanadOnDataDir(t *testing.T) {
	sockDir, err := os.MkdirTemp("", "romt-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	dataDir := t.TempDir()
	args := func(sock string) []string {
		return []string{"--listen", "", "--socket", filepath.Join(sockDir, sock), "--data-dir", dataDir,
			"--pki-dir", t.TempDir(), "--admin-config", "", "--log-level", "warn"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs1 bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args("1.sock"), &logs1) }()
	c, err := client.New("unix://" + filepath.Join(sockDir, "1.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	var logs2 bytes.Buffer
	start := time.Now()
	err = run(ctx2, args("2.sock"), &logs2)
	took := time.Since(start)
	if err == nil {
		t.Fatal("a second romanad ran on a data directory in use")
	}
	t.Logf("after %s: %v", took.Round(time.Millisecond), err)
	if took > 5*time.Second {
		t.Errorf("the second romanad took %s to give up", took)
	}
	if want := "in use by pid " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if err := c.Health(ctx); err != nil {
		t.Errorf("the first romanad after the second gave up: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("first romanad: %v\n%s", err, logs1.String())
	}
}

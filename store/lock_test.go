package store

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/expect"
)

// TestDataDirInUse: a second store on a data directory that a running
// store holds fails within seconds, naming the holder's process, instead of
// waiting for etcd's own file locks forever; once the first store closes,
// the directory opens again.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first := openEmbedded(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	s, err := Open(ctx, Config{DataDir: dir, UnsafeNoFsync: true})
	took := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatal("a second store opened a data directory in use")
	}
	t.Logf("after %s: %v", took.Round(time.Millisecond), err)
	if took > 5*time.Second {
		t.Errorf("the second store took %s to fail", took)
	}
	if pid := strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), "pid "+pid) {
		t.Errorf("the error does not name the holder (pid %s): %v", pid, err)
	}
	first.Close()
	openEmbedded(t, dir)
}

// TestOpenHonoursContext: a store whose start hangs (here: etcd's database
// file locked by someone else, which our lock does not cover) returns soon
// after its context ends, so that romanad obeys SIGTERM while it starts.
func TestOpenHonoursContext(t *testing.T) {
	dir := t.TempDir()
	openEmbedded(t, dir).Close()
	db, err := os.OpenFile(filepath.Join(dir, "member", "snap", "db"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := syscall.Flock(int(db.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		s, err := Open(ctx, Config{DataDir: dir, UnsafeNoFsync: true})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || ctx.Err() == nil {
			t.Fatalf("Open returned %v before its context ended", err)
		}
		t.Log(err)
	case <-time.After(20 * time.Second):
		t.Fatal("Open still starting 18s after its context ended")
	}
	// Unlocked, the start that was abandoned closes its etcd and the
	// directory opens again.
	syscall.Flock(int(db.Fd()), syscall.LOCK_UN)
	expect.Eventually(t, "reopen after the abandoned start", 20*time.Second, func() error {
		s, err := Open(context.Background(), Config{DataDir: dir, UnsafeNoFsync: true})
		if err == nil {
			s.Close()
		}
		return err
	})
}

package cni

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReaper: an ADD waits for its veth's deletion in flight, a second
// DEL does not start another, and Wait covers every deletion.
func TestReaper(t *testing.T) {
	var r reaper
	release := make(chan struct{})
	calls := 0
	del := func(string) error { calls++; <-release; return errors.New("failed on purpose") }
	if !r.delete("romanaA", del, discardLog()) {
		t.Fatal("first delete not started")
	}
	if r.delete("romanaA", del, discardLog()) {
		t.Fatal("second delete of the same veth started")
	}
	if err := r.wait(context.Background(), "romanaB"); err != nil {
		t.Fatalf("wait for a veth nobody deletes: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.wait(ctx, "romanaA"); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a deletion in flight and ctx done: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- r.wait(context.Background(), "romanaA") }()
	select {
	case err := <-waited:
		t.Fatalf("wait returned %v before the deletion ended", err)
	default:
	}
	close(release)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	r.Wait()
	if calls != 1 {
		t.Fatalf("del called %d times, want 1", calls)
	}
	if !r.delete("romanaA", func(string) error { return nil }, discardLog()) {
		t.Fatal("delete after the first one ended not started")
	}
	done := make(chan struct{})
	go func() { r.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Wait did not return")
	}
}

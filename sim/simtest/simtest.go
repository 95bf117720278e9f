// Package simtest gives tests a sim.Lab that is deleted when the test ends,
// and the root/tool checks every namespace test starts with.
package simtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/romana/romana/sim"
)

// Prefix starts every namespace a test creates.
const Prefix = "romt"

// Need stops the test unless ok: under CI=true it fails, otherwise it is
// skipped, with why as the reason.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", why)
	}
	t.Skip(why)
}

// Require stops the test unless it runs as root with the given tools on
// PATH ("ip" is always required). Under CI=true a missing requirement fails
// the test; otherwise it skips it.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	stop := t.Skipf
	if os.Getenv("CI") == "true" {
		stop = t.Fatalf
	}
	if os.Geteuid() != 0 {
		stop("needs root to create network namespaces")
		return
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			stop("needs %s on PATH: %v", tool, err)
			return
		}
	}
}

// abandonedAfter is how old a test namespace with no process in it must be
// before New deletes it as the leftover of a killed run: longer than the
// Makefile's go test -timeout.
const abandonedAfter = 30 * time.Minute

// New returns a lab with a unique prefix "romt-XXXXXX", closed (all its
// namespaces deleted) when the test and its subtests end, also on failure.
// It first sweeps namespaces abandoned by killed test runs.
func New(t testing.TB) *sim.Lab {
	t.Helper()
	Require(t)
	if err := sim.CleanupAbandoned(Prefix, abandonedAfter); err != nil {
		t.Logf("sweep abandoned test namespaces: %v", err)
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	prefix := Prefix + "-" + hex.EncodeToString(b)
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	lab, err := sim.New(context.Background(), prefix, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("close lab %s: %v", prefix, err)
		}
	})
	return lab
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

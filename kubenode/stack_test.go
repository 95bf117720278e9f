package kubenode

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestStack: cleanups run last first at Close, also after a Fatal ended
// Run; the Fatal's message is Run's error; errors of cleanups are Close's;
// temporary directories are removed.
func TestStack(t *testing.T) {
	var log bytes.Buffer
	s := NewStack("kubenode-stack-test", &log)
	var order []string
	var dir string
	err := s.Run(func(tb testing.TB) {
		tb.Cleanup(func() { order = append(order, "first") })
		dir = tb.TempDir()
		tb.Cleanup(func() {
			order = append(order, "second")
			tb.Errorf("cleanup failed")
		})
		tb.Fatalf("stop here: %d", 42)
		order = append(order, "not reached")
	})
	if err == nil || !strings.Contains(err.Error(), "stop here: 42") {
		t.Fatalf("Run: %v, want the Fatal's message", err)
	}
	if !s.Failed() {
		t.Error("not Failed after Fatal")
	}
	if len(order) != 0 {
		t.Fatalf("cleanups ran before Close: %v", order)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("TempDir %s gone before Close: %v", dir, err)
	}
	cerr := s.Close()
	if strings.Join(order, ",") != "second,first" {
		t.Errorf("cleanups ran as %v, want second,first", order)
	}
	if cerr == nil || !strings.Contains(cerr.Error(), "cleanup failed") || strings.Contains(cerr.Error(), "stop here") {
		t.Errorf("Close: %v, want the cleanup's error only", cerr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("TempDir %s still there after Close: %v", dir, err)
	}
	if !strings.Contains(log.String(), "stop here: 42") {
		t.Errorf("log %q lacks the Fatal's message", log.String())
	}
	if err := NewStack("kubenode-stack-test", &log).Run(func(testing.TB) {}); err != nil {
		t.Errorf("Run of a function that returns: %v", err)
	}
	sk := NewStack("kubenode-stack-test", &log)
	if err := sk.Run(func(tb testing.TB) { tb.Skipf("no %s", "binaries") }); err == nil || !strings.Contains(err.Error(), "no binaries") {
		t.Errorf("Run ended by Skipf: %v, want its message", err)
	}
	if sk.Failed() || !sk.Skipped() {
		t.Errorf("after Skipf: Failed %v, Skipped %v; want false, true", sk.Failed(), sk.Skipped())
	}
}

package expect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that records failures instead of failing; a
// Fatal ends the calling goroutine, as testing's does.
type recorder struct {
	testing.TB
	errors, fatals, logs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Name() string {
	return "TestSomething/sub"
}
func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
	panic(r)
}

// run calls f with r, stopping where a Fatal would stop a test.
func (r *recorder) run(f func(testing.TB)) *recorder {
	func() {
		defer func() {
			if p := recover(); p != nil && p != r {
				panic(p)
			}
		}()
		f(r)
	}()
	return r
}

func TestGolden(t *testing.T) {
	t.Chdir(t.TempDir())
	golden := func(name, got string) *recorder {
		return (&recorder{TB: t}).run(func(tb testing.TB) { Golden(tb, name, got) })
	}
	r := golden("sub/a.txt", "one\n")
	if len(r.fatals) != 1 || !strings.Contains(r.fatals[0], "go test -run '^TestSomething$' -update creates it") {
		t.Fatalf("missing file: %+v", r)
	}

	*update = true
	r = golden("sub/a.txt", "one\n")
	*update = false
	if len(r.errors)+len(r.fatals) != 0 {
		t.Fatalf("-update: %+v", r)
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "sub", "a.txt")); err != nil || string(b) != "one\n" {
		t.Fatalf("-update wrote %q, %v", b, err)
	}

	if r = golden("sub/a.txt", "one\n"); len(r.errors)+len(r.fatals) != 0 {
		t.Fatalf("same content: %+v", r)
	}
	r = golden("sub/a.txt", "two")
	want := "testdata/sub/a.txt differs (go test -run '^TestSomething$' -update rewrites it)\n--- got\ntwo\n--- want\none\n"
	if len(r.fatals) != 0 || len(r.errors) != 1 || r.errors[0] != want {
		t.Fatalf("different content: %+v, want the error %q", r, want)
	}
}

func TestPoll(t *testing.T) {
	calls := 0
	err := Poll(10*time.Second, func() error {
		if calls++; calls < 4 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("Poll = %v after %d calls, want nil after 4", err, calls)
	}

	calls = 0
	start := time.Now()
	err = Poll(100*time.Millisecond, func() error { calls++; return fmt.Errorf("call %d", calls) })
	if took := time.Since(start); err == nil || err.Error() != fmt.Sprintf("call %d", calls) || took < 100*time.Millisecond {
		t.Fatalf("Poll = %v after %d calls and %v, want the last call's error after the timeout", err, calls, took)
	}

	calls = 0
	if err := Poll(0, func() error { calls++; return nil }); err != nil || calls != 1 {
		t.Fatalf("Poll with no time = %v after %d calls, want one call", err, calls)
	}
}

func TestEventually(t *testing.T) {
	r := (&recorder{TB: t}).run(func(tb testing.TB) {
		Eventually(tb, "the thing", 20*time.Millisecond, func() error { return errors.New("not yet") })
	})
	if len(r.fatals) != 1 || !strings.HasPrefix(r.fatals[0], "the thing: not reached in ") || !strings.HasSuffix(r.fatals[0], ": not yet") {
		t.Fatalf("failing condition: %+v", r)
	}
	calls := 0
	r = (&recorder{TB: t}).run(func(tb testing.TB) {
		Eventually(tb, "the thing", 30*time.Millisecond, func() error {
			if calls++; calls < 3 {
				return errors.New("not yet")
			}
			return nil
		})
	})
	if len(r.fatals)+len(r.errors) != 0 || calls != 3 {
		t.Fatalf("condition met on the third call: %d calls, %+v", calls, r)
	}
	// 5 + 10 ms of pauses is more than a sixth of 30 ms: logged.
	if len(r.logs) != 1 || !strings.HasPrefix(r.logs[0], "the thing: took ") {
		t.Fatalf("a long wait is not logged: %+v", r)
	}
}

// Package expect holds what every package's tests check results with:
// golden files under testdata/ (rewritten with -update) and waiting, with a
// deadline, for a condition to hold. It is for tests only: it registers the
// -update flag.
package expect

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ instead of comparing with them")

// Golden compares got with the file testdata/name of the package under
// test. With -update it writes got there instead (making directories as
// needed). A missing file fails the test; a different one is an error.
func Golden(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	test, _, _ := strings.Cut(t.Name(), "/")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run '^%s$' -update creates it)", err, test)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -run '^%s$' -update rewrites it)\n--- got\n%s--- want\n%s", path, test, withNewline(got), withNewline(string(want)))
	}
}

func withNewline(s string) string {
	if s == "" || strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// Poll calls cond until it returns nil, and then returns nil; once timeout
// has passed, it returns cond's last error instead. cond is called at
// least once, and again 5 ms after a failure, then after twice as long
// each time, up to every 50 ms.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Eventually is Poll that fails the test, naming what was awaited and
// cond's last error, when cond still fails after timeout. A wait longer
// than a sixth of timeout is logged: a deadline that comes close to what
// the machine needs shows before it flakes.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	start := time.Now()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("%s: not reached in %v: %v", what, time.Since(start).Round(time.Millisecond), err)
	}
	if took := time.Since(start); took > timeout/6 {
		t.Logf("%s: took %v", what, took.Round(time.Millisecond))
	}
}

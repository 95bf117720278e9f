package kubenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Stack runs this package's (and package kubetest's) start functions
// outside `go test`, for a command such as the Kubernetes demo: it stands
// in for the testing.TB they take. What they register with Cleanup is kept
// on a stack that Close runs last-in first-out, as `go test` would at the
// end of a test; a Fatal (or Skip) ends the function given to Run, not the
// program. Log lines go to the writer given to NewStack. Package kubetest's
// and this package's Skip when binaries are missing becomes Run's error.
//
// Only Run may call the start functions (a Fatal ends Run's goroutine);
// Close may be called from any goroutine, once, after Run returned.
type Stack struct {
	testing.TB // nil: every method of the interface is overridden below

	name string
	log  io.Writer

	mu       sync.Mutex
	cleanups []func()
	dirs     []string
	failed   bool
	errs     []string
	skipped  bool
	skipMsg  string
	ctx      context.Context
	cancel   context.CancelFunc
}

// NewStack returns an empty stack; name prefixes its temporary
// directories.
func NewStack(name string, log io.Writer) *Stack {
	ctx, cancel := context.WithCancel(context.Background())
	return &Stack{name: name, log: log, ctx: ctx, cancel: cancel}
}

// errFatal marks the end of a Run by Fatal or Skip.
var errFatal = errors.New("fatal")

// Run calls fn with the stack as its testing.TB on a goroutine of its own
// and returns when fn returns or calls Fatal, Fatalf, FailNow or a Skip:
// then with the error (the message), and the cleanups registered so far
// stay on the stack for Close.
func (s *Stack) Run(fn func(t testing.TB)) error {
	done := make(chan error, 1)
	go func() {
		normal := false
		defer func() {
			if normal {
				done <- nil
				return
			}
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
				return
			}
			// runtime.Goexit from FailNow or SkipNow.
			s.mu.Lock()
			msg := strings.Join(s.errs, "; ")
			if s.skipped && !s.failed {
				msg = s.skipMsg
			}
			s.mu.Unlock()
			done <- fmt.Errorf("%w: %s", errFatal, msg)
		}()
		fn(s)
		normal = true
	}()
	return <-done
}

// Close runs the registered cleanups, last first, removes the temporary
// directories, and returns the errors reported meanwhile (Error, Errorf
// from cleanups), joined.
func (s *Stack) Close() error {
	s.cancel()
	before := s.errCount()
	for {
		s.mu.Lock()
		if len(s.cleanups) == 0 {
			s.mu.Unlock()
			break
		}
		f := s.cleanups[len(s.cleanups)-1]
		s.cleanups = s.cleanups[:len(s.cleanups)-1]
		s.mu.Unlock()
		s.runCleanup(f)
	}
	s.mu.Lock()
	dirs := s.dirs
	s.dirs = nil
	errs := append([]string(nil), s.errs[before:]...)
	s.mu.Unlock()
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.RemoveAll(dirs[i]); err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", dirs[i], err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// runCleanup runs f; a FailNow inside it ends f only.
func (s *Stack) runCleanup(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				s.Errorf("cleanup panicked: %v", r)
			}
		}()
		f()
	}()
	<-done
}

func (s *Stack) errCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.errs)
}

// Cleanup registers f to run at Close, before those registered earlier.
func (s *Stack) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

// TempDir returns a new directory, removed at Close.
func (s *Stack) TempDir() string {
	d, err := os.MkdirTemp("", s.name+"-")
	if err != nil {
		s.Fatalf("TempDir: %v", err)
	}
	s.mu.Lock()
	s.dirs = append(s.dirs, d)
	s.mu.Unlock()
	return d
}

func (s *Stack) Log(args ...any) { fmt.Fprintln(s.log, strings.TrimSuffix(fmt.Sprint(args...), "\n")) }
func (s *Stack) Logf(format string, args ...any) {
	fmt.Fprintln(s.log, strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
}

func (s *Stack) Error(args ...any) { s.record(fmt.Sprint(args...)) }
func (s *Stack) Errorf(format string, args ...any) {
	s.record(fmt.Sprintf(format, args...))
}

func (s *Stack) record(msg string) {
	s.mu.Lock()
	s.failed = true
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
	s.Log("error: " + msg)
}

func (s *Stack) Fatal(args ...any)                 { s.Error(args...); s.FailNow() }
func (s *Stack) Fatalf(format string, args ...any) { s.Errorf(format, args...); s.FailNow() }
func (s *Stack) Fail() {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
}
func (s *Stack) FailNow() { s.Fail(); runtime.Goexit() }
func (s *Stack) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Skip, Skipf and SkipNow end Run like Fatal without marking the stack
// failed (so the start functions' cleanups print no daemon logs): Run
// still returns an error, the message. A demo stopped by Ctrl-C ends so.
func (s *Stack) Skip(args ...any) { s.skip(fmt.Sprint(args...)) }
func (s *Stack) Skipf(format string, args ...any) {
	s.skip(fmt.Sprintf(format, args...))
}
func (s *Stack) SkipNow() { s.skip("skipped") }
func (s *Stack) skip(msg string) {
	s.mu.Lock()
	s.skipped = true
	s.skipMsg = msg
	s.mu.Unlock()
	s.Log(msg)
	runtime.Goexit()
}
func (s *Stack) Skipped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skipped
}
func (s *Stack) Helper()      {}
func (s *Stack) Name() string { return s.name }
func (s *Stack) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		s.Fatalf("Setenv %s: %v", key, err)
	}
	s.Cleanup(func() {
		if had {
			os.Setenv(key, old)
		} else {
			os.Unsetenv(key)
		}
	})
}
func (s *Stack) Chdir(dir string) {
	old, err := os.Getwd()
	if err != nil {
		s.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		s.Fatal(err)
	}
	s.Cleanup(func() { os.Chdir(old) })
}
func (s *Stack) Context() context.Context { return s.ctx }
func (s *Stack) Output() io.Writer        { return s.log }
func (s *Stack) ArtifactDir() string      { return s.TempDir() }
func (s *Stack) Attr(key, value string)   { s.Logf("%s: %s", key, value) }

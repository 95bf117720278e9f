// Package kubenode runs real Kubernetes nodes on one machine for tests: per
// simulated host (a network namespace of package sim) a containerd and a
// kubelet and a kube-proxy in nftables mode, plus kube-scheduler and
// kube-controller-manager against a kubetest cluster, and the upstream test
// images (agnhost, pause) built locally as an OCI layout. It is test
// support, imported from _test.go files, and the Kubernetes demo's
// (demo/kubedemo), which runs its start functions through a Stack instead
// of a testing.TB.
//
// The Kubernetes binaries are built from Go modules and cached outside the
// repository by scripts/kube-node.sh (`make kube-node`; `make test` runs
// it); containerd and runc are Debian's (scripts/install-deps.sh). A test
// that finds them missing is skipped on a workstation and fails under
// CI=true or when $ROMANA_KUBE_NODE names the directory.
package kubenode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/kubetest"
)

// EnvDir names a directory holding the binaries of scripts/kube-node.sh
// instead of the cache's. When it is set they must be there: a test fails
// rather than skips.
const EnvDir = "ROMANA_KUBE_NODE"

// The upstream test images, with the names and tags that Kubernetes'
// e2e suites reference at kubetest.Version (test/utils/image/manifest.go:
// Agnhost and Pause).
const (
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.63.0"
	PauseImage   = "registry.k8s.io/pause:3.10.2"
)

// Binaries are the Kubernetes programs of scripts/kube-node.sh.
var Binaries = []string{"kubelet", "kube-scheduler", "kube-controller-manager", "kube-proxy", "agnhost"}

// hostTools are what a node needs from the machine.
var hostTools = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare", "mount"}

// Dir returns the directory of the Kubernetes binaries: $ROMANA_KUBE_NODE
// when set, otherwise $TOOLS/kube-node-VERSION (TOOLS defaulting to
// ~/.cache/romana-tools, as in the Makefile).
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	tools := os.Getenv("TOOLS")
	if tools == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the kube-node cache: %w", err)
		}
		tools = filepath.Join(home, ".cache", "romana-tools")
	}
	return filepath.Join(tools, "kube-node-"+kubetest.Version), nil
}

// check reports what is missing to run nodes, or nil.
func check() (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	var missing []string
	for _, b := range Binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, filepath.Join(dir, b))
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("missing %s; build them with `make kube-node` (scripts/kube-node.sh)", strings.Join(missing, ", "))
	}
	for _, tool := range hostTools {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("%s not on PATH: install containerd and runc (scripts/install-deps.sh)", tool)
		}
	}
	return dir, nil
}

// Require returns the binaries' directory, or skips the test when something
// is missing (fails instead under CI=true or with $ROMANA_KUBE_NODE set).
func Require(t testing.TB) string {
	t.Helper()
	dir, err := check()
	if err != nil {
		if os.Getenv(EnvDir) != "" || os.Getenv("CI") == "true" {
			t.Fatalf("kubenode: %v", err)
		}
		t.Skipf("kubenode: %v", err)
	}
	return dir
}

// proc is a daemon the harness started; stop ends it by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

// start runs args (logging to logPath) and returns at once.
func start(name, logPath string, args []string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	// If the test binary dies without its cleanups, so does the daemon.
	// A process group of its own: a Ctrl-C at the terminal reaches the
	// program that started it, which stops it in order, and not the
	// daemon directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process ended, with how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process (by PID), waits up to grace, then
// kills it. It reports whether SIGTERM was enough.
func (p *proc) stop(grace time.Duration) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every 100 ms until it returns nil, p exits, or
// timeout passes.
func waitFor(ctx context.Context, what string, timeout time.Duration, p *proc, cond func() error) error {
	deadline := time.Now().Add(timeout)
	last := errors.New("not tried")
	for {
		if last = cond(); last == nil {
			return nil
		}
		if p != nil {
			if done, err := p.exited(); done {
				return fmt.Errorf("wait for %s: %s exited (%v):\n%s", what, p.name, err, p.tail(30))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not after %v: %w", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WriteImages writes the pause and agnhost images as one OCI layout tar to
// path. Both hold the agnhost binary (one shared layer): agnhost's own
// image runs it as its entrypoint like upstream's, the pause image runs
// `agnhost pause` (sleeps until signalled).
func WriteImages(dir, path string) error {
	bin, err := os.ReadFile(filepath.Join(dir, "agnhost"))
	if err != nil {
		return fmt.Errorf("read agnhost for the test images: %w", err)
	}
	files := []File{{Path: "agnhost", Mode: 0o755, Data: bin}, {Path: "tmp/.keep", Mode: 0o644}}
	var buf bytes.Buffer
	if err := WriteLayout(&buf,
		Image{Name: AgnhostImage, Entrypoint: []string{"/agnhost"}, Files: files},
		Image{Name: PauseImage, Entrypoint: []string{"/agnhost", "pause"}, Files: files},
	); err != nil {
		return fmt.Errorf("write the test images: %w", err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

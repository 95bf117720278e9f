package servertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/romana/romana/store"
)

// EtcdBinary is the external etcd StartEtcd runs (Debian's etcd-server).
var EtcdBinary = "/usr/bin/etcd"

// EtcdTLS makes StartEtcd serve clients over TLS with these files and
// require client certificates signed by CAFile.
type EtcdTLS struct {
	CertFile, KeyFile, CAFile string
}

// Etcd is an external etcd process started by StartEtcd.
type Etcd struct {
	// Endpoint is its client URL.
	Endpoint string
	// PID is its process id.
	PID int
	// Stop kills it (by PID) and waits for it; safe to call twice.
	Stop func()
}

// StartEtcd runs EtcdBinary on free loopback ports with its own data
// directory, waits until it answers, and kills it at t.Cleanup. Without the
// binary the test fails when CI=true and is skipped otherwise.
func StartEtcd(t testing.TB, tlsCfg *EtcdTLS) *Etcd {
	t.Helper()
	return withEtcd(t, func() (*Etcd, error) { return startEtcd(t, tlsCfg) })
}

// withEtcd fails (CI=true) or skips the test without EtcdBinary, then runs
// start up to 3 times: a free port may be taken before etcd binds it.
func withEtcd[T any](t testing.TB, start func() (T, error)) T {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("servertest: external etcd %s is missing (install etcd-server): %v", EtcdBinary, err)
		}
		t.Skipf("servertest: external etcd %s is missing (install etcd-server)", EtcdBinary)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		v, err := start()
		if err == nil {
			return v
		}
		lastErr = err
	}
	t.Fatalf("servertest: %v", lastErr)
	var zero T
	return zero
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(t testing.TB, tlsCfg *EtcdTLS) (*Etcd, error) {
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	curl := scheme + "://127.0.0.1:" + strconv.Itoa(cport)
	purl := "http://127.0.0.1:" + strconv.Itoa(pport)
	args := []string{
		"--name", "romt",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", "romt=" + purl, "--initial-cluster-state", "new",
	}
	if tlsCfg != nil {
		args = append(args, "--cert-file", tlsCfg.CertFile, "--key-file", tlsCfg.KeyFile,
			"--trusted-ca-file", tlsCfg.CAFile, "--client-cert-auth")
	}
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(EtcdBinary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", EtcdBinary, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	stopped := false
	e := &Etcd{Endpoint: curl, PID: cmd.Process.Pid}
	e.Stop = func() {
		if stopped {
			return
		}
		stopped = true
		if p, err := os.FindProcess(e.PID); err == nil {
			p.Kill()
		}
		<-exited
	}
	t.Cleanup(e.Stop)

	sc := store.Config{Endpoints: []string{curl}, DialTimeout: 2 * time.Second}
	if tlsCfg != nil {
		sc.CertFile, sc.KeyFile, sc.CAFile = tlsCfg.CertFile, tlsCfg.KeyFile, tlsCfg.CAFile
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("etcd exited during start-up:\n%s", tail(b, 2000))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := store.Open(ctx, sc)
		cancel()
		if err == nil {
			st.Close()
			return e, nil
		}
		if time.Now().After(deadline) {
			e.Stop()
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("etcd on %s not ready after 20s: %v\n%s", curl, err, tail(b, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

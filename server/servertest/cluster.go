package servertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdCluster is a cluster of external etcd processes (EtcdBinary) on
// loopback ports, each with its own data directory, started by
// StartEtcdCluster. Its members can be killed and restarted one by one.
type EtcdCluster struct {
	Members []*EtcdMember
	t       testing.TB
}

// EtcdMember is one process of an EtcdCluster. Its methods are safe for
// concurrent use.
type EtcdMember struct {
	Name      string
	ClientURL string
	PeerURL   string
	// LogPath is where the process writes its log (appended across restarts).
	LogPath string

	dataDir string
	initial string // --initial-cluster
	id      uint64 // raft member id, read once the cluster is up

	mu     sync.Mutex
	pid    int
	exited chan struct{} // closed when the current process has exited
}

// StartEtcdCluster starts an n-member etcd cluster on free loopback ports,
// waits until it has a leader and answers a linearizable read, and kills
// every member at t.Cleanup (their logs are printed if t failed). Without
// the binary the test fails when CI=true and is skipped otherwise.
func StartEtcdCluster(t testing.TB, n int) *EtcdCluster {
	t.Helper()
	return withEtcd(t, func() (*EtcdCluster, error) { return startEtcdCluster(t, n) })
}

func startEtcdCluster(t testing.TB, n int) (*EtcdCluster, error) {
	c := &EtcdCluster{t: t}
	var initial []string
	for i := 0; i < n; i++ {
		cport, err := freePort()
		if err != nil {
			return nil, err
		}
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		dir := t.TempDir()
		m := &EtcdMember{Name: fmt.Sprintf("romt%d", i), ClientURL: "http://127.0.0.1:" + strconv.Itoa(cport),
			PeerURL: "http://127.0.0.1:" + strconv.Itoa(pport), LogPath: filepath.Join(dir, "etcd.log"),
			dataDir: filepath.Join(dir, "data")}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.initial = strings.Join(initial, ",")
	}
	stopAll := func() {
		for _, m := range c.Members {
			m.Kill()
		}
	}
	for _, m := range c.Members {
		if err := m.start(); err != nil {
			stopAll()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		stopAll()
		return nil, fmt.Errorf("etcd cluster on %v: %w\n%s", c.Endpoints(), err, c.logTails(1500))
	}
	for _, m := range c.Members {
		st, err := m.status(ctx)
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("etcd member %s: %w", m.Name, err)
		}
		m.id = st.Header.MemberId
	}
	t.Cleanup(func() {
		stopAll()
		if t.Failed() {
			t.Logf("etcd cluster logs:\n%s", c.logTails(3000))
		}
	})
	return c, nil
}

// Endpoints returns every member's client URL.
func (c *EtcdCluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// WaitHealthy waits until every running member answers a linearizable
// read (so the cluster has a leader and each of them reaches it).
func (c *EtcdCluster) WaitHealthy(ctx context.Context) error {
	for _, m := range c.Members {
		if m.PID() == 0 {
			continue
		}
		if err := m.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Leader returns the member that is the cluster's raft leader, as the
// first running member that names one reports it.
func (c *EtcdCluster) Leader(ctx context.Context) (*EtcdMember, error) {
	var errs []error
	for _, m := range c.Members {
		if m.PID() == 0 {
			continue
		}
		st, err := m.status(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range c.Members {
			if l.id == st.Leader && st.Leader != 0 {
				return l, nil
			}
		}
		errs = append(errs, fmt.Errorf("member %s names leader %x", m.Name, st.Leader))
	}
	return nil, fmt.Errorf("no member names a leader: %w", errors.Join(errs...))
}

func (c *EtcdCluster) logTails(n int) string {
	var b strings.Builder
	for _, m := range c.Members {
		log, _ := os.ReadFile(m.LogPath)
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", m.Name, m.ClientURL, tail(log, n))
	}
	return b.String()
}

// PID returns the member's process id, 0 when it is not running.
func (m *EtcdMember) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pid
}

// Kill sends SIGKILL to the member's process (by its PID) and waits until
// it has exited. It does nothing when the member is not running.
func (m *EtcdMember) Kill() {
	m.mu.Lock()
	pid, exited := m.pid, m.exited
	m.mu.Unlock()
	if pid == 0 {
		return
	}
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
	}
	<-exited
}

// Restart starts the member again on its data directory (it rejoins the
// cluster with its identity) and waits until it answers a linearizable read.
func (m *EtcdMember) Restart(ctx context.Context) error {
	if m.PID() != 0 {
		return fmt.Errorf("etcd member %s is running (pid %d)", m.Name, m.PID())
	}
	if err := m.start(); err != nil {
		return err
	}
	return m.WaitReady(ctx)
}

func (m *EtcdMember) start() error {
	// --initial-* flags are ignored once the data directory exists.
	args := []string{
		"--name", m.Name, "--data-dir", m.dataDir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.initial, "--initial-cluster-state", "new", "--initial-cluster-token", "romt",
	}
	logf, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(EtcdBinary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", EtcdBinary, err)
	}
	exited := make(chan struct{})
	m.mu.Lock()
	m.pid, m.exited = cmd.Process.Pid, exited
	m.mu.Unlock()
	go func() {
		cmd.Wait()
		logf.Close()
		m.mu.Lock()
		if m.exited == exited {
			m.pid = 0
		}
		m.mu.Unlock()
		close(exited)
	}()
	return nil
}

// WaitReady waits until the member answers a linearizable read through
// its own client URL, or ctx ends, or its process exits.
func (m *EtcdMember) WaitReady(ctx context.Context) error {
	m.mu.Lock()
	exited := m.exited
	m.mu.Unlock()
	cl, err := m.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.Get(rctx, "romt-health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(m.LogPath)
			return fmt.Errorf("etcd member %s exited:\n%s", m.Name, tail(log, 2000))
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s on %s not ready: %w (last: %v)", m.Name, m.ClientURL, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *EtcdMember) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
}

func (m *EtcdMember) status(ctx context.Context) (*clientv3.StatusResponse, error) {
	cl, err := m.client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return cl.Status(ctx, m.ClientURL)
}

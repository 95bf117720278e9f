package server_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// faultsEnv makes the fault tests run at full size (make faults).
const faultsEnv = "ROMANA_FAULTS"

// TestFaultsAllocations: allocations from 64 clients (each its own TLS
// connection, as admin) through a real romanad process on a 3-member etcd
// cluster, while the etcd leader is killed (SIGKILL, by PID) and later
// restarted, and romanad is killed with SIGKILL twice and started again.
// A client retries a failed request with the same name (allocation by
// name is idempotent) until it is answered. Afterwards, read from etcd
// itself: no IP is held by two names, in the store or in the answers
// (duplicates); every address a client was given is stored with that IP
// (acknowledged but missing); every IP claim names a stored address with
// that IP and every address has its claim (leaked); nothing was stored
// that no client asked for.
//
// 500 allocations in make test; ROMANA_FAULTS=1 (make faults) runs 10,000.
func TestFaultsAllocations(t *testing.T) {
	n := 500
	if os.Getenv(faultsEnv) == "1" {
		n = 10000
	}
	const clients = 64
	ctx := context.Background()
	cluster := servertest.StartEtcdCluster(t, 3)
	rd := startRomanad(t, cluster.Endpoints())
	admin := rd.client(t)
	w := populate(t, admin)
	w.prefix = "f-"

	var (
		acked    atomic.Int64
		mu       sync.Mutex
		got      = map[string]api.Address{}
		ackTimes []time.Duration
		errKinds = map[string]int{}
		errShown = map[string]string{} // one message of each kind
	)
	type fault struct {
		at    float64 // fraction of n acknowledged
		what  string
		do    func() error
		began chan struct{}
		start time.Time
		took  time.Duration
	}
	var leader *servertest.EtcdMember
	faults := []*fault{
		{at: 0.15, what: "kill -9 the etcd leader", do: func() error {
			var err error
			if leader, err = cluster.Leader(ctx); err != nil {
				return err
			}
			t.Logf("killing etcd leader %s (pid %d)", leader.Name, leader.PID())
			killed := time.Now()
			leader.Kill()
			// How long etcd itself takes to elect another leader (the
			// pause romanad's clients see includes it).
			for {
				if l, err := cluster.Leader(ctx); err == nil && l != leader {
					t.Logf("etcd elected %s %v after the kill", l.Name, time.Since(killed).Round(time.Millisecond))
					return nil
				}
				if time.Since(killed) > time.Minute {
					return fmt.Errorf("no new etcd leader a minute after killing %s", leader.Name)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}},
		{at: 0.35, what: "restart that etcd member", do: func() error {
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			return leader.Restart(rctx)
		}},
		{at: 0.50, what: "kill -9 romanad, start it again", do: rd.killRestart},
		{at: 0.75, what: "kill -9 romanad, start it again", do: rd.killRestart},
	}
	for _, f := range faults {
		f.began = make(chan struct{})
	}

	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for k := 0; k < clients; k++ {
		c := rd.client(t)
		wg.Go(func() {
			for i := range jobs {
				req := w.request(i)
				for attempt := 0; ; attempt++ {
					rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					a, err := c.Allocate(rctx, req)
					cancel()
					if err == nil {
						mu.Lock()
						got[req.Name] = a
						ackTimes = append(ackTimes, time.Since(start))
						mu.Unlock()
						acked.Add(1)
						break
					}
					mu.Lock()
					kind := errKind(err)
					if errKinds[kind]++; errKinds[kind] == 1 {
						errShown[kind] = err.Error()
					}
					mu.Unlock()
					if api.ReasonOf(err) == api.ReasonInvalid || api.ReasonOf(err) == api.ReasonAlreadyExists || attempt > 2000 {
						t.Errorf("allocate %s: %v (attempt %d)", req.Name, err, attempt)
						break
					}
					time.Sleep(time.Duration(20+attempt%10*20) * time.Millisecond)
				}
			}
		})
	}
	// The faults, one after the other, each when its share of allocations
	// is acknowledged, with allocations in flight: the feeder holds back
	// the jobs past a fault's share until it has begun (so every fault
	// falls inside the run), and allocations go on while it lasts.
	faultErr := make(chan error, 1)
	go func() {
		defer close(faultErr)
		for _, f := range faults {
			trigger := int64(f.at*float64(n)) - clients/2
			for acked.Load() < trigger {
				time.Sleep(5 * time.Millisecond)
			}
			f.start = time.Now()
			close(f.began)
			err := f.do()
			f.took = time.Since(f.start)
			if err != nil {
				faultErr <- fmt.Errorf("%s: %w", f.what, err)
				return
			}
		}
	}()
	next := 0
	for i := 0; i < n; i++ {
		for next < len(faults) && i >= int(faults[next].at*float64(n)) {
			<-faults[next].began
			next++
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	if err := <-faultErr; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// What the store holds, read from etcd itself.
	cl, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	stored := map[string]api.Address{}
	list, err := admin.ListAddresses(ctx, api.AddressFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		stored[a.Name] = a
	}
	claims, err := cl.Get(ctx, ipam.DefaultPrefix+"ips/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var dups, missing, leaked, stray []string
	asked := map[string]bool{}
	for i := 0; i < n; i++ {
		asked[w.request(i).Name] = true
	}
	byIP := map[netip.Addr]string{}
	for _, a := range stored {
		if other, ok := byIP[a.IP]; ok {
			dups = append(dups, fmt.Sprintf("%s held by %s and %s", a.IP, other, a.Name))
		}
		byIP[a.IP] = a.Name
		if !asked[a.Name] {
			stray = append(stray, a.Name)
		}
	}
	ackedIP := map[netip.Addr]string{}
	for name, a := range got {
		if other, ok := ackedIP[a.IP]; ok {
			dups = append(dups, fmt.Sprintf("%s acknowledged to %s and %s", a.IP, other, name))
		}
		ackedIP[a.IP] = name
		if s, ok := stored[name]; !ok || s.IP != a.IP {
			missing = append(missing, fmt.Sprintf("%s acknowledged with %s, stored %v", name, a.IP, s.IP))
		}
	}
	claimed := map[string]bool{}
	for _, kv := range claims.Kvs {
		key := string(kv.Key)
		b, err := hex.DecodeString(key[strings.LastIndexByte(key, '/')+1:])
		ip, ok := netip.AddrFromSlice(b)
		name := string(kv.Value)
		if a, found := stored[name]; err != nil || !ok || !found || a.IP != ip {
			leaked = append(leaked, fmt.Sprintf("claim %s names %q", key, name))
			continue
		}
		claimed[name] = true
	}
	for name := range stored {
		if !claimed[name] {
			leaked = append(leaked, "address "+name+" without its claim")
		}
	}
	for what, l := range map[string][]string{"duplicates": dups, "acknowledged but missing": missing, "leaked": leaked, "stored but never asked for": stray} {
		if len(l) > 0 {
			sort.Strings(l)
			t.Errorf("%s: %d, first: %s", what, len(l), strings.Join(l[:min(len(l), 10)], "; "))
		}
	}
	if len(got) != n {
		t.Errorf("%d names acknowledged, want %d", len(got), n)
	}
	t.Logf("%d allocations from %d clients in %v (%.0f/s) on a 3-member etcd cluster; %d addresses stored, %d claims; "+
		"duplicates %d, acknowledged but missing %d, leaked %d", n, clients, took.Round(time.Millisecond),
		float64(n)/took.Seconds(), len(stored), len(claims.Kvs), len(dups), len(missing), len(leaked))
	sort.Slice(ackTimes, func(i, j int) bool { return ackTimes[i] < ackTimes[j] })
	for _, f := range faults {
		// The longest pause between acknowledgements from the fault's
		// start to 10 s after it ended (or the end of the run).
		from, to := f.start.Sub(start), f.start.Sub(start)+f.took+10*time.Second
		var pause time.Duration
		last := from
		count := 0
		for _, at := range ackTimes {
			if at < from || at > to {
				continue
			}
			pause = max(pause, at-last)
			last = at
			if at <= from+f.took {
				count++
			}
		}
		t.Logf("fault at %2.0f%%: %s: took %v, %d allocations acknowledged meanwhile; longest pause in acknowledgements %v",
			f.at*100, f.what, f.took.Round(time.Millisecond), count, pause.Round(time.Millisecond))
	}
	repairs := rd.logLines("repair:")
	if len(repairs) > 0 {
		t.Errorf("romanad's start-up Repair fixed the store (a leak hidden by a restart):\n%s", strings.Join(repairs, "\n"))
	}
	kinds := make([]string, 0, len(errKinds))
	for k, v := range errKinds {
		kinds = append(kinds, fmt.Sprintf("%d × %s", v, k))
	}
	sort.Strings(kinds)
	t.Logf("failed attempts, retried: %s", strings.Join(kinds, "; "))
	for k, msg := range errShown {
		if strings.HasPrefix(k, "5") {
			t.Logf("  %s, e.g.: %s", k, msg)
		}
	}
}

// errKind names an error's class for the figures, without its details.
func errKind(err error) string {
	var ae *api.Error
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("%d %s", ae.Status, ae.Reason)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "EOF"):
		return "connection closed (EOF)"
	}
	return "other: " + err.Error()
}

// romanadProc is a romanad process (the binary, so that it can be killed
// with SIGKILL) on an external etcd, with its own PKI and socket.
type romanadProc struct {
	t      *testing.T
	args   []string
	url    string
	sock   string
	admin  string // the admin credential romanad wrote
	logDir string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int
}

// romanadBinary returns $ROMANA_BIN/romanad (set by the Makefile) or a
// fresh build.
func romanadBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("ROMANA_BIN"); d != "" {
		return filepath.Join(d, "romanad")
	}
	d := t.TempDir()
	cmd := exec.Command("go", "build", "-o", d+"/", "github.com/romana/romana/cmd/romanad")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build romanad: %v\n%s", err, out)
	}
	return filepath.Join(d, "romanad")
}

func startRomanad(t *testing.T, endpoints []string) *romanadProc {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "romt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	r := &romanadProc{t: t, url: "https://" + addr, sock: filepath.Join(sockDir, "r.sock"),
		admin: filepath.Join(dir, "admin.conf"), logDir: dir}
	r.args = []string{romanadBinary(t), "--listen", addr, "--advertise", "127.0.0.1", "--socket", r.sock,
		"--pki-dir", filepath.Join(dir, "pki"), "--admin-config", r.admin, "--data-dir", filepath.Join(dir, "unused"),
		"--etcd-endpoints", strings.Join(endpoints, ","), "--log-level", "warn"}
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			for i := 1; i <= r.runs; i++ {
				b, _ := os.ReadFile(filepath.Join(r.logDir, fmt.Sprintf("romanad.%d.log", i)))
				t.Logf("romanad run %d log:\n%s", i, tailString(b, 3000))
			}
		}
	})
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	return r
}

func tailString(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// start runs romanad and waits until it answers on its socket.
func (r *romanadProc) start() error {
	r.mu.Lock()
	r.runs++
	logPath := filepath.Join(r.logDir, fmt.Sprintf("romanad.%d.log", r.runs))
	r.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.args[0], r.args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	c, err := client.New("unix://" + r.sock)
	if err != nil {
		return err
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if err := c.Health(ctx); err == nil {
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("romanad exited: %v\n%s", cmd.ProcessState, b)
		case <-ctx.Done():
			return fmt.Errorf("romanad not healthy after 60s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL to romanad (by its PID) and waits until it exited.
func (r *romanadProc) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// logLines returns the lines of every run's log that contain s.
func (r *romanadProc) logLines(s string) []string {
	r.mu.Lock()
	runs := r.runs
	r.mu.Unlock()
	var out []string
	for i := 1; i <= runs; i++ {
		b, _ := os.ReadFile(filepath.Join(r.logDir, fmt.Sprintf("romanad.%d.log", i)))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, s) {
				out = append(out, l)
			}
		}
	}
	return out
}

func (r *romanadProc) killRestart() error {
	r.kill()
	return r.start()
}

// client returns a new client of romanad's TLS listener with the admin
// credential: its own connection.
func (r *romanadProc) client(t *testing.T) *client.Client {
	t.Helper()
	cred, err := pki.LoadCredential(r.admin)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := client.FromCredential(cred, r.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

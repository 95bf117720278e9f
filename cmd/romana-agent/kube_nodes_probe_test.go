package main

// The probes of TestKubeNodesLatency (kube_nodes_bench_test.go): rounds of
// real packets from prober pods to a new pod, and the kernel's times of
// its host route.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/sim"
)

// latTick is one round of a pod's probes, sent at one instant.
type latTick struct {
	at time.Time
	// pending: probes of the round without their answer yet.
	pending int
	// synAnswered: the allowed prober's SYN was answered (SYN-ACK or RST);
	// got: its GET answered with the pod's name; deniedAnswered: the
	// denied prober's SYN was answered.
	synAnswered, got, deniedAnswered bool
}

// held reports whether the round saw the policy enforced with the pod
// serving.
func (tk *latTick) held() bool { return tk.pending == 0 && tk.got && !tk.deniedAnswered }

// latSettle is how many rounds in a row (sent one after the other, all
// answered) must see the policy enforced and the pod serving before a
// pod's probes stop.
const latSettle = 10

// probeLoop probes p from a node other than its own (see
// TestKubeNodesLatency): every latPollEvery a round starts, whatever the
// earlier rounds' probes still wait for, so a dropped SYN never delays the
// next round. Once latSettle rounds in a row saw the policy enforced with
// the pod serving, it starts no more, waits for the rounds in flight, and
// records the first round of each state (enforcement: the first after the
// last round in which the denied prober got an answer).
func probeLoop(ctx context.Context, mu *sync.Mutex, active *atomic.Int64, p *latPod, allowed, denied *latProber) {
	active.Add(1)
	defer active.Add(-1)
	mu.Lock()
	ip, name := p.ip, p.name
	mu.Unlock()
	var (
		tmu      sync.Mutex // guards ticks
		ticks    []*latTick
		inFlight sync.WaitGroup
	)
	// settled: the last latSettle rounds of the longest run of answered
	// rounds from the first all held.
	settled := func() bool {
		tmu.Lock()
		defer tmu.Unlock()
		n := 0
		for n < len(ticks) && ticks[n].pending == 0 {
			n++
		}
		if n < latSettle {
			return false
		}
		for _, tk := range ticks[n-latSettle : n] {
			if !tk.held() {
				return false
			}
		}
		return true
	}
	next := time.Now()
	for ctx.Err() == nil && !settled() {
		tk := &latTick{at: time.Now(), pending: 2}
		tmu.Lock()
		ticks = append(ticks, tk)
		tmu.Unlock()
		inFlight.Go(func() {
			body, err := allowed.getWithin(ip, latDropAfter, latGetWithin)
			// A refused connection, or an error after the connection was
			// made, still had its SYN answered by the pod.
			answered := err == nil || errors.Is(err, syscall.ECONNREFUSED) || !isDialError(err)
			tmu.Lock()
			tk.synAnswered, tk.got = answered, err == nil && body == name
			tk.pending--
			tmu.Unlock()
		})
		inFlight.Go(func() {
			answered, _ := denied.syn(ip, latDropAfter)
			tmu.Lock()
			tk.deniedAnswered = answered
			tk.pending--
			tmu.Unlock()
		})
		next = next.Add(max(latPollEvery, time.Duration(active.Load())*time.Second/latRoundsPerSecond))
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(next)):
		}
	}
	inFlight.Wait()
	mu.Lock()
	defer mu.Unlock()
	p.rounds = len(ticks)
	if len(ticks) > 1 {
		p.roundEvery = ticks[len(ticks)-1].at.Sub(ticks[0].at) / time.Duration(len(ticks)-1)
	}
	last := -1 // the last round in which the denied prober got an answer
	for i, tk := range ticks {
		if tk.deniedAnswered {
			last = i
			p.through++
			if p.firstThrough.IsZero() {
				p.firstThrough = tk.at
			}
		}
	}
	for i, tk := range ticks { // in the order they were sent
		if tk.synAnswered && p.firstPacket.IsZero() {
			p.firstPacket = tk.at
		}
		if tk.got && p.reachable.IsZero() {
			p.reachable = tk.at
		}
		if tk.synAnswered && !tk.deniedAnswered {
			if i < last {
				p.falseDrops++
			} else if p.enforcedNet.IsZero() {
				p.enforcedNet = tk.at
			}
		}
		if i > last && tk.got && p.enforced.IsZero() {
			p.enforced = tk.at
		}
	}
}

// latProber is a prober pod whose sockets are made in its network
// namespace by one goroutine that stays there (its thread locked), so a
// probe costs no namespace switch, and connects wait in Go's poller, so
// probes in flight hold no thread each.
type latProber struct {
	name, node string
	ip         netip.Addr
	req        chan chan latSocket
}

type latSocket struct {
	fd  int
	err error
}

// newLatProber starts the prober's socket maker in ns; it ends with the
// test.
func newLatProber(t *testing.T, name, node string, ip netip.Addr, ns *sim.Namespace) *latProber {
	p := &latProber{name: name, node: node, ip: ip, req: make(chan chan latSocket)}
	entered := make(chan error, 1)
	go func() {
		// The thread must not end with this goroutine (what Go does to a
		// thread still locked when its goroutine returns): the kernel
		// sends a process's children their parent-death signal when the
		// thread that started them ends, and kubenode starts containerd
		// and the kubelet with one (SIGKILL) from whatever thread it ran
		// on. So the thread goes back to the pool, in its own namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			entered <- err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromPath(ns.Path)
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		if err != nil {
			runtime.UnlockOSThread()
			entered <- err
			return
		}
		entered <- nil
		for r := range p.req {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
			r <- latSocket{fd, err}
		}
		if err := netns.Set(orig); err != nil {
			// Neither back to the pool in the pod's namespace, nor ended:
			// parked until the test process exits.
			select {}
		}
		runtime.UnlockOSThread()
	}()
	if err := <-entered; err != nil {
		t.Fatalf("prober %s: enter %s: %v", name, ns.Path, err)
	}
	t.Cleanup(func() { close(p.req) })
	return p
}

// dialError marks an error of the dial itself (no answer to the SYN, or
// one that refused it), as opposed to one after the connection was made.
type dialError struct{ err error }

func (e dialError) Error() string { return "dial: " + e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

func isDialError(err error) bool {
	var d dialError
	return errors.As(err, &d)
}

// dial connects from inside the pod to dst:80 within the timeout.
func (p *latProber) dial(dst netip.Addr, within time.Duration) (net.Conn, error) {
	r := make(chan latSocket, 1)
	p.req <- r
	sock := <-r
	if sock.err != nil {
		return nil, fmt.Errorf("socket in %s: %w", p.name, sock.err)
	}
	fd := sock.fd
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: 80, Addr: dst.As4()}); err != nil && err != syscall.EINPROGRESS {
		syscall.Close(fd)
		return nil, dialError{err}
	}
	f := os.NewFile(uintptr(fd), "probe")
	conn, err := net.FileConn(f) // a dup of fd, in the poller
	f.Close()
	if err != nil {
		return nil, err
	}
	rc, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetWriteDeadline(time.Now().Add(within))
	var connErr error
	if err := rc.Write(func(fd uintptr) bool {
		v, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		switch {
		case err != nil:
			connErr = err
		case v != 0:
			connErr = syscall.Errno(v)
		default:
			if _, err := syscall.Getpeername(int(fd)); err != nil {
				return false // still connecting: wait until writable
			}
		}
		return true
	}); err != nil {
		conn.Close()
		return nil, dialError{err} // the deadline: no answer
	}
	if connErr != nil {
		conn.Close()
		return nil, dialError{connErr}
	}
	conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

// getWithin sends GET /hostname from inside the pod to dst:80 (the dial
// bounded by dialWithin, the whole GET by within) and returns the body; a
// dial failure is a dialError.
func (p *latProber) getWithin(dst netip.Addr, dialWithin, within time.Duration) (string, error) {
	conn, err := p.dial(dst, dialWithin)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(within))
	fmt.Fprintf(conn, "GET /hostname HTTP/1.0\r\n\r\n")
	b, err := io.ReadAll(io.LimitReader(conn, 4096))
	if err != nil {
		return "", err
	}
	status, rest, _ := strings.Cut(string(b), "\r\n")
	if !strings.HasPrefix(status, "HTTP/1.") || !strings.Contains(status, " 200 ") {
		return "", fmt.Errorf("bad answer %q", status)
	}
	_, body, _ := strings.Cut(rest, "\r\n\r\n")
	return body, nil
}

// syn reports whether a TCP SYN from the pod to dst:80 got any answer
// within the timeout: a connection (SYN-ACK) or a refusal (RST).
func (p *latProber) syn(dst netip.Addr, within time.Duration) (bool, error) {
	conn, err := p.dial(dst, within)
	if err == nil {
		conn.Close()
		return true, nil
	}
	return errors.Is(err, syscall.ECONNREFUSED), err
}

// routeTimes records when each /32 route first appeared in a host's
// namespace, from a netlink subscription read in this process (an `ip
// monitor` process lags by seconds when the machine is loaded).
type routeTimes struct {
	mu    sync.Mutex
	first map[netip.Addr]time.Time
}

func startRouteTimes(t *testing.T, h *sim.Host) *routeTimes {
	ns, err := netns.GetFromPath(h.Path)
	if err != nil {
		t.Fatal(err)
	}
	r := &routeTimes{first: map[netip.Addr]time.Time{}}
	ch := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	var closing atomic.Bool // the subscription's socket fails once closed
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns,
		ErrorCallback: func(err error) {
			if !closing.Load() {
				t.Errorf("route subscription in %s: %v", h.Name, err)
			}
		}}); err != nil {
		ns.Close()
		t.Fatalf("subscribe to routes in %s: %v", h.Name, err)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for u := range ch {
			at := time.Now()
			if u.Type != unix.RTM_NEWROUTE || u.Dst == nil {
				continue
			}
			ip, ok := netip.AddrFromSlice(u.Dst.IP)
			if ones, bits := u.Dst.Mask.Size(); !ok || ones != bits {
				continue
			}
			r.mu.Lock()
			if _, seen := r.first[ip.Unmap()]; !seen {
				r.first[ip.Unmap()] = at
			}
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		closing.Store(true)
		close(done)
		<-ended
		ns.Close()
	})
	return r
}

// at returns when a route to ip first appeared, or zero.
func (r *routeTimes) at(ip netip.Addr) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first[ip]
}

// first returns the time of the first line recorded so far that match
// accepts, or zero.
func (m *nftEvents) first(match func(string) bool) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, l := range m.lines {
		if match(l) {
			return m.at[i]
		}
	}
	return time.Time{}
}

package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/romana/romana/sim"
)

// Ports the servers listen on in each destination namespace.
const (
	iperfPort    = "5201"
	sockperfPort = "11111"
	connectPort  = "7070"
)

// proc is a daemon the benchmark started (etcd, flanneld, iperf3 and
// sockperf servers); stop kills it by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
}

// start runs args in ns (`ip netns exec` execs the program itself, so the
// PID is the daemon's), its output into dir/<name>.log.
func (l *lab) start(ctx context.Context, ns *sim.Namespace, name string, args ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(l.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := ns.Command(context.WithoutCancel(ctx), args...) // stopped by stopAll, not by ctx
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, ns.Name, err)
	}
	p := &proc{name: name, cmd: cmd, log: f}
	l.procs = append(l.procs, p)
	l.log.Debug("started", "name", name, "pid", cmd.Process.Pid, "ns", ns.Name)
	return p, nil
}

// stopAll kills every process start started, newest first, and waits.
func (l *lab) stopAll() {
	for i := len(l.procs) - 1; i >= 0; i-- {
		p := l.procs[i]
		_ = p.cmd.Process.Kill() // by PID: this process only
		_ = p.cmd.Wait()
		p.log.Close()
	}
	l.procs = nil
}

// logTail is the end of a started process's log, for error messages.
func (l *lab) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, name+".log"))
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// poll calls fn until it succeeds or timeout passes.
func poll(ctx context.Context, timeout time.Duration, fn func() error, what string) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startServers runs iperf3 and sockperf servers and a TCP accept loop on
// a destination.
func (l *lab) startServers(ctx context.Context, cond, placement string, dst endpoint) error {
	tag := cond + "-" + placement
	if _, err := l.start(ctx, dst.ns, "iperf3-"+tag, "iperf3", "-s", "-B", dst.ip.String(), "-p", iperfPort); err != nil {
		return err
	}
	if _, err := l.start(ctx, dst.ns, "sockperf-"+tag, "sockperf", "server", "-i", dst.ip.String(), "-p", sockperfPort); err != nil {
		return err
	}
	var ln net.Listener
	if err := dst.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(dst.ip.String(), connectPort))
		return err
	}); err != nil {
		return fmt.Errorf("listen for connects in %s: %w", dst.ns.Name, err)
	}
	l.listeners = append(l.listeners, ln)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return nil
}

// reach waits until src can connect to dst's accept loop (routes learnt,
// servers up).
func reach(ctx context.Context, src, dst endpoint, timeout time.Duration) error {
	return poll(ctx, timeout, func() error {
		return src.ns.Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(dst.ip.String(), connectPort), 500*time.Millisecond)
			if err != nil {
				return err
			}
			return c.Close()
		})
	}, fmt.Sprintf("%s to reach %s", src.ns.Name, dst.ip))
}

// iperf runs an iperf3 client for secs seconds with streams parallel
// streams and returns the Gbit/s received.
// The server may not listen yet, or still be closing the previous test
// ("the server is busy running a test"; seconds on a loaded machine).
func iperf(ctx context.Context, src, dst endpoint, secs, streams int) (float64, error) {
	var g float64
	err := poll(ctx, 30*time.Second, func() error {
		out, err := src.ns.Command(ctx, "iperf3", "-c", dst.ip.String(), "-p", iperfPort, "-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J").Output()
		if g, err = parseIperf(out); err != nil {
			return err // iperf3 -J puts its error in the JSON, whatever its exit status
		}
		return nil
	}, "iperf3 to "+dst.ip.String())
	if err != nil {
		return 0, fmt.Errorf("iperf3 %s -> %s: %w", src.ns.Name, dst.ip, err)
	}
	return g, nil
}

func parseIperf(out []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3: nothing received")
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// sockperf runs a UDP ping-pong for secs seconds (sockperf's own warm-up
// included) and returns the p50 and p99 half round trip in µs.
func sockperf(ctx context.Context, src, dst endpoint, secs int) (p50, p99 float64, err error) {
	out, err := src.ns.Command(ctx, "sockperf", "ping-pong", "-i", dst.ip.String(), "-p", sockperfPort, "-t", strconv.Itoa(secs)).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("sockperf %s -> %s: %w: %s", src.ns.Name, dst.ip, err, firstLine(out))
	}
	return parseSockperf(string(out))
}

var percentileRE = regexp.MustCompile(`percentile (\d+\.\d+) =\s+([0-9.]+)`)

func parseSockperf(out string) (p50, p99 float64, err error) {
	for _, m := range percentileRE.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "50.000":
			p50 = v
		case "99.000":
			p99 = v
		}
	}
	if p50 == 0 || p99 == 0 {
		return 0, 0, fmt.Errorf("sockperf: no p50/p99 in its output: %s", firstLine([]byte(out)))
	}
	return p50, p99, nil
}

// connects opens and closes TCP connections from src to dst one after
// another for d and returns how many per second: every SYN meets the
// forwarding path's connection setup (conntrack, the first-packet rules).
func connects(src, dst endpoint, d time.Duration) (float64, error) {
	n := 0
	start := time.Now()
	err := src.ns.Do(func() error {
		for time.Since(start) < d {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(dst.ip.String(), connectPort), time.Second)
			if err != nil {
				return err
			}
			c.Close()
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("connects %s -> %s: %w", src.ns.Name, dst.ip, err)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

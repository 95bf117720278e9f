// Package bird runs BIRD 2 routers inside network namespaces and reads
// their state through birdc, for the leaf-spine demo and the tests that
// put Romana's BGP speaker and static routes in front of a real router. It
// renders the small configurations those routers need (config.go).
package bird

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Binaries, as Debian's bird2 installs them.
const (
	Daemon = "/usr/sbin/bird"
	Client = "/usr/sbin/birdc"
)

// Router is one BIRD process in a namespace, with its own configuration,
// control socket, PID file and log in Dir.
type Router struct {
	Name string // e.g. "tor1"
	NS   string // network namespace name, e.g. "romd-tor1"
	Dir  string

	Conf, Sock, PIDFile, Log string

	cmd  *exec.Cmd
	done chan struct{}
}

// New prepares a router; Start runs it.
func New(name, ns, dir string) *Router {
	return &Router{Name: name, NS: ns, Dir: dir,
		Conf:    filepath.Join(dir, name+".bird.conf"),
		Sock:    filepath.Join(dir, name+".bird.ctl"),
		PIDFile: filepath.Join(dir, name+".bird.pid"),
		Log:     filepath.Join(dir, name+".bird.log")}
}

// Check validates a configuration with `bird -p` without running it.
func Check(ctx context.Context, conf string) error {
	f, err := os.CreateTemp("", "romana-bird-*.conf")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if out, err := exec.CommandContext(ctx, Daemon, "-p", "-c", f.Name()).CombinedOutput(); err != nil {
		return fmt.Errorf("bird -p: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Start writes conf and runs BIRD in the foreground inside the namespace
// (`ip netns exec NS bird -f -c CONF -s SOCK -P PID`), then waits until it
// answers on its control socket.
func (r *Router) Start(ctx context.Context, conf string) error {
	if r.cmd != nil && !r.exited() {
		return fmt.Errorf("bird %s: already running (pid %d)", r.Name, r.cmd.Process.Pid)
	}
	if err := Check(ctx, conf); err != nil {
		return fmt.Errorf("bird %s: %w", r.Name, err)
	}
	if err := os.WriteFile(r.Conf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("bird %s: write config: %w", r.Name, err)
	}
	logf, err := os.OpenFile(r.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bird %s: %w", r.Name, err)
	}
	os.Remove(r.Sock)
	cmd := exec.Command("ip", "netns", "exec", r.NS, Daemon, "-f", "-c", r.Conf, "-s", r.Sock, "-P", r.PIDFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches only our caller
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("bird %s: start: %w", r.Name, err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.Cmd(ctx, "show", "status"); err == nil {
			return nil
		}
		if r.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			r.Stop()
			return fmt.Errorf("bird %s did not start: %s", r.Name, r.Tail(10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID returns the process id, or 0 when not running.
func (r *Router) PID() int {
	if r.cmd == nil || r.exited() {
		return 0
	}
	return r.cmd.Process.Pid
}

func (r *Router) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Stop stops the process by its PID: SIGTERM, then SIGKILL after 5 seconds.
func (r *Router) Stop() error {
	if r.cmd == nil || r.exited() {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	os.Remove(r.Sock)
	return nil
}

// Cmd runs a birdc command and returns its output.
func (r *Router) Cmd(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, Client, append([]string{"-s", r.Sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s on %s: %w: %s", strings.Join(args, " "), r.Name, err, strings.TrimSpace(string(out)))
	}
	s := string(out)
	if strings.Contains(s, "Unable to connect to server") || strings.Contains(s, "syntax error") {
		return s, fmt.Errorf("birdc %s on %s: %s", strings.Join(args, " "), r.Name, strings.TrimSpace(s))
	}
	return s, nil
}

// Established reports whether BGP protocol proto's session is up.
func (r *Router) Established(ctx context.Context, proto string) (bool, error) {
	out, err := r.Cmd(ctx, "show", "protocols", proto)
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "Established"), nil
}

// Networks returns the distinct prefixes `birdc show route ARGS...` lists
// (e.g. "protocol", "h1"), sorted.
func (r *Router) Networks(ctx context.Context, args ...string) ([]netip.Prefix, error) {
	out, err := r.Cmd(ctx, append([]string{"show", "route"}, args...)...)
	if err != nil {
		return nil, err
	}
	return parseNetworks(out), nil
}

// parseNetworks reads the prefixes of `show route` output: each route
// block starts with its network in the first column.
func parseNetworks(out string) []netip.Prefix {
	var nets []netip.Prefix
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		f := strings.Fields(line)
		if p, err := netip.ParsePrefix(f[0]); err == nil {
			nets = append(nets, p)
		}
	}
	slices.SortFunc(nets, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(nets)
}

// Tail returns the last lines of the router's log.
func (r *Router) Tail(n int) string {
	b, err := os.ReadFile(r.Log)
	if errors.Is(err, os.ErrNotExist) || err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// This file is the only place that creates, enters or deletes namespaces.

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// Namespace is a named network namespace (as `ip netns add` creates it).
type Namespace struct {
	Name string // e.g. "romt-3f2a-h1"
	Path string // /run/netns/<Name>
}

func newNamespace(ctx context.Context, name string) (*Namespace, error) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return &Namespace{Name: name, Path: filepath.Join(netnsDir, name)}, nil
}

// deleteNamespace removes a named namespace; a missing one is not an error.
// The namespace itself lives on while processes still run in it.
func deleteNamespace(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("delete namespace %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Command returns a command that runs args inside the namespace
// (`ip netns exec NAME args...`).
func (n *Namespace) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Exec runs args inside the namespace and returns their combined output.
func (n *Namespace) Exec(ctx context.Context, args ...string) (string, error) {
	out, err := n.Command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in namespace %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Handle returns a netlink handle operating inside the namespace, without
// switching any thread. The caller closes it.
func (n *Namespace) Handle() (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(n.Path)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", n.Name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in namespace %s: %w", n.Name, err)
	}
	return h, nil
}

// Do runs fn on an OS thread switched into the namespace: netlink sockets
// fn opens, files it opens under /proc/sys/net and processes it starts all
// belong to the namespace. Goroutines fn starts do not. If the thread cannot
// be switched back it is left locked, so the runtime discards it.
func (n *Namespace) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: current namespace: %w", n.Name, err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(n.Path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", n.Name, err))
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a listener inside the namespace (it stays there whatever
// thread later accepts on it), e.g. romanad's TLS listener on a controller.
func (n *Namespace) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in namespace %s: %w", addr, n.Name, err)
	}
	return ln, nil
}

// open opens the namespace, for netlink calls that move links into it.
func (n *Namespace) open() (netns.NsHandle, error) {
	ns, err := netns.GetFromPath(n.Path)
	if err != nil {
		return 0, fmt.Errorf("open namespace %s: %w", n.Name, err)
	}
	return ns, nil
}

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// DeleteRecorded deletes the named namespaces (a list NewRecorded's record
// kept), last first; missing ones are skipped. Every name must start with
// prefix + "-": a list that names anything else is refused whole.
func DeleteRecorded(prefix string, names []string) error {
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	for _, n := range names {
		if !strings.HasPrefix(n, prefix+"-") || strings.ContainsAny(n, "/\x00") {
			return fmt.Errorf("namespace %q is not one of prefix %s: not deleting any", n, prefix)
		}
	}
	var errs []error
	for i := len(names) - 1; i >= 0; i-- {
		errs = append(errs, deleteNamespace(names[i]))
	}
	return errors.Join(errs...)
}

// CleanupStale deletes every named namespace whose name starts with
// prefix + "-": the leftovers of a crashed run with that prefix. Processes
// still running in them keep them alive; stop those first.
func CleanupStale(prefix string) error {
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			errs = append(errs, deleteNamespace(e.Name()))
		}
	}
	return errors.Join(errs...)
}

// CleanupAbandoned deletes named namespaces starting with prefix + "-" that
// were created more than olderThan ago and have no process left in them:
// what a test run killed before its cleanup (a timeout, SIGKILL) leaves
// behind. Namespaces of runs still going are younger or hold processes.
func CleanupAbandoned(prefix string, olderThan time.Duration) error {
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix+"-") {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < olderThan {
			continue
		}
		out, err := exec.Command("ip", "netns", "pids", e.Name()).Output()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			continue
		}
		errs = append(errs, deleteNamespace(e.Name()))
	}
	return errors.Join(errs...)
}

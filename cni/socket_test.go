package cni

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/romana/romana/expect"
)

// TestAgentRestart: an ADD started while the agent is down (socket gone)
// completes once the agent is back, within the plugin's wait.
func TestAgentRestart(t *testing.T) {
	e := newEnv(t)
	c1, c1Path := e.container(t, "r1")
	rt1 := &libcni.RuntimeConf{ContainerID: "rst1", NetNS: c1Path, IfName: "eth0"}
	if _, err := e.add(t, e.cfg, e.list, rt1); err != nil {
		t.Fatalf("ADD before the restart: %v", err)
	}
	e.agent.Stop()
	if _, err := os.Stat(e.sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket %s after the agent stopped: %v", e.sock, err)
	}
	c2, c2Path := e.container(t, "r2")
	rt2 := &libcni.RuntimeConf{ContainerID: "rst2", NetNS: c2Path, IfName: "eth0"}
	done := make(chan error, 1)
	go func() { _, err := e.cfg.AddNetworkList(context.Background(), e.list, rt2); done <- err }()
	// Restart once the plugin is waiting: its process runs and ADD has not
	// returned. (cni/forward's tests prove the retry itself in-process.)
	expect.Eventually(t, "the plugin waits for the agent", 5*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("ADD returned while the agent was down: %v", err)
		default:
		}
		if !pluginRunning(e.dir) {
			return errors.New("no romana-cni process yet")
		}
		return nil
	})
	e.agent.Start()
	if err := <-done; err != nil {
		t.Fatalf("ADD across the agent restart: %v", err)
	}
	for _, c := range []struct {
		ns string
		rt *libcni.RuntimeConf
	}{{c1, rt1}, {c2, rt2}} {
		if err := ping(c.ns, Gateway.String()); err != nil {
			t.Error(err)
		}
		if err := e.cfg.CheckNetworkList(context.Background(), e.list, c.rt); err != nil {
			t.Errorf("CHECK %s after the restart: %v", c.rt.ContainerID, err)
		}
		if err := e.cfg.DelNetworkList(context.Background(), e.list, c.rt); err != nil {
			t.Errorf("DEL %s: %v", c.rt.ContainerID, err)
		}
		e.assertGone(t, c.rt.ContainerID, "eth0", c.ns)
	}
}

// pluginRunning reports whether a romana-cni process from dir runs.
func pluginRunning(dir string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && exe == filepath.Join(dir, "romana-cni") {
			return true
		}
	}
	return false
}

// TestAgentDown: with no agent on the socket, ADD fails after the plugin's
// wait with "try again later" naming the socket and leaves nothing; STATUS
// says "not available" at once; DEL of an attachment whose veth exists
// fails (the runtime retries it), DEL of one never made succeeds. Once the
// agent is back the retried DEL completes.
func TestAgentDown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c1Path := e.container(t, "d1")
	rt1 := &libcni.RuntimeConf{ContainerID: "down1", NetNS: c1Path, IfName: "eth0"}
	if _, err := e.add(t, e.cfg, e.list, rt1); err != nil {
		t.Fatal(err)
	}
	e.agent.Stop()

	c2, c2Path := e.container(t, "d2")
	rt2 := &libcni.RuntimeConf{ContainerID: "down2", NetNS: c2Path, IfName: "eth0"}
	_, err := e.cfg.AddNetworkList(ctx, e.list, rt2)
	cniError(t, err, types.ErrTryAgainLater, "romana-agent at "+e.sock+": no answer within 5s")
	if !strings.Contains(err.Error(), "is romana-agent running on this host?") {
		t.Errorf("ADD error %q does not say what to check", err)
	}
	e.assertGone(t, "down2", "eth0", c2)
	cniError(t, e.cfg.GetStatusNetworkList(ctx, e.list), types.ErrPluginNotAvailable, "romana-agent at "+e.sock+": cannot connect")

	// The runtime cleaning up the failed sandbox: nothing was made.
	if err := e.cfg.DelNetworkList(ctx, e.list, rt2); err != nil {
		t.Errorf("DEL of an attachment never made, agent down: %v", err)
	}
	// down1 is wired: its DEL must wait for the agent.
	cniError(t, e.cfg.DelNetworkList(ctx, e.list, rt1), types.ErrTryAgainLater, "romana-agent at "+e.sock)
	if _, err := e.rd.GetAddress(ctx, "down1:eth0"); err != nil {
		t.Errorf("the failed DEL lost down1's address: %v", err)
	}

	e.agent.Start()
	if err := e.cfg.DelNetworkList(ctx, e.list, rt1); err != nil {
		t.Fatalf("DEL down1 once the agent is back: %v", err)
	}
	e.assertGone(t, "down1", "eth0", c1)
	e.assertGone(t, "down2", "eth0", c2)
}

// TestDelNeverAdded: DEL of an attachment that was never added succeeds
// (with and without its netns) and changes nothing.
func TestDelNeverAdded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c, cPath := e.container(t, "n1")
	before := len(links(t, e.host))
	for _, rt := range []*libcni.RuntimeConf{
		{ContainerID: "never1", NetNS: cPath, IfName: "eth0"},
		{ContainerID: "never1", IfName: "eth0"},
		{ContainerID: "never2", NetNS: "/var/run/netns/romt-gone-" + uniq(), IfName: "eth0"},
	} {
		if err := e.cfg.DelNetworkList(ctx, e.list, rt); err != nil {
			t.Errorf("DEL %s (netns %q), never added: %v", rt.ContainerID, rt.NetNS, err)
		}
	}
	e.assertGone(t, "never1", "eth0", c)
	if n := len(links(t, e.host)); n != before {
		t.Errorf("host has %d links after the DELs, %d before", n, before)
	}
}

// TestListen: the socket is 0600 in a directory Listen makes 0700; a
// directory others may write or own is refused, a path that is not a
// socket too, as is a socket another process
// serves; a stale socket is replaced; Serve removes the socket when done.
func TestListen(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "run")
	sock := filepath.Join(dir, "cni.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, sock: os.ModeSocket | 0o600} {
		if st, err := os.Stat(p); err != nil || st.Mode() != want {
			t.Errorf("%s: %v, %v; want mode %v", p, st.Mode(), err, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%s holds %d entries, want the socket only", dir, len(ents))
	}
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another process serves it") {
		t.Errorf("second Listen on a served socket: %v", err)
	}
	// A crashed agent leaves its socket behind.
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the closed listener removed %s (want it left, as a crash would): %v", sock, err)
	}
	ln, err = Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Plugin: &Plugin{}, Log: discardLog()}
	go func() { done <- srv.Serve(ctx, ln, sock) }()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Serve returned: %v", err)
	}

	notSock := filepath.Join(dir, "file")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(notSock); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}

	nobodys := filepath.Join(t.TempDir(), "nobodys")
	if err := os.Mkdir(nobodys, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(nobodys, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(nobodys, "cni.sock")); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("Listen in a directory of uid 65534: %v", err)
	}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(open, "cni.sock")); err == nil || !strings.Contains(err.Error(), "lets others replace the socket") {
		t.Errorf("Listen in a 0777 directory: %v", err)
	}
}

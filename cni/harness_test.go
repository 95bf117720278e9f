package cni

import (
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/romana/romana/sim"
)

// requireRoot skips when not root, except under CI=true where it fails.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if isCI() {
		tb.Fatal("this test needs root (network namespaces) and CI=true")
	}
	tb.Skip("needs root for network namespaces")
}

// builds are the romana-cni binaries the tests built, by build tags.
var builds = struct {
	sync.Mutex
	byTags map[string]*pluginBuild
}{byTags: map[string]*pluginBuild{}}

type pluginBuild struct {
	once sync.Once
	dir  string
	err  error
}

// buildPlugin returns a directory holding romana-cni built (once per test
// binary) with the given build tags.
func buildPlugin(tb testing.TB, tags string) string {
	tb.Helper()
	builds.Lock()
	b := builds.byTags[tags]
	if b == nil {
		b = &pluginBuild{}
		builds.byTags[tags] = b
	}
	builds.Unlock()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "romt-cni-bin-")
		if b.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-tags", tags, "-o", filepath.Join(b.dir, "romana-cni"), "github.com/romana/romana/cmd/romana-cni").CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build -tags %q romana-cni: %v\n%s", tags, err, out)
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.dir
}

// pluginDir returns a directory holding the romana-cni binary (the thin
// forwarder): $ROMANA_BIN when it has one (make test), otherwise a fresh
// go build.
func pluginDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("ROMANA_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "romana-cni")); err == nil {
			return d
		}
	}
	return buildPlugin(tb, "")
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range builds.byTags {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
	os.Exit(code)
}

// run runs a command and fails the test on error.
func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// uniq is a short random suffix so parallel runs do not collide.
func uniq() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// netnsAdd creates a named namespace "romt-<name>" and deletes it at cleanup.
// It returns the name and its path.
func netnsAdd(tb testing.TB, name string) (string, string) {
	tb.Helper()
	name = "romt-" + name
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return name, "/var/run/netns/" + name
}

// hostGateway sets a host namespace up the way the agent does for
// endpoints: romana-gw holding the gateway address, and forwarding on.
func hostGateway(tb testing.TB, h string) {
	tb.Helper()
	// This kernel may lack dummy links; an empty bridge holds an address as well.
	if err := exec.Command("ip", "-n", h, "link", "add", "romana-gw", "type", "dummy").Run(); err != nil {
		run(tb, "ip", "-n", h, "link", "add", "romana-gw", "type", "bridge")
	}
	run(tb, "ip", "-n", h, "addr", "add", Gateway.String()+"/32", "dev", "romana-gw")
	run(tb, "ip", "-n", h, "link", "set", "romana-gw", "up")
	run(tb, "ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
}

// dialIn returns a dial function that connects from inside ns.
func dialIn(ns *sim.Namespace) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() (err error) {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// links lists the link names in a namespace.
func links(tb testing.TB, nsName string) []string {
	tb.Helper()
	var out []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(run(tb, "ip", "-n", nsName, "-j", "link", "show")), &out); err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, l := range out {
		names = append(names, l.Name)
	}
	return names
}

func isCI() bool { return os.Getenv("CI") == "true" }

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// cnitoolContainerID is the container id cnitool derives from a netns path.
func cnitoolContainerID(netnsPath string) string {
	s := sha512.Sum512([]byte(netnsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// removeCnitoolCache removes what cnitool cached for an attachment in
// /var/lib/cni (it has no way to move its cache).
func removeCnitoolCache(netName, containerID string) {
	_ = os.Remove(filepath.Join("/var/lib/cni/results", netName+"-"+containerID+"-eth0"))
}

// agentServer is the agent's CNI server as a test runs it: in the test
// process, doing each request's work in a simulated host's namespace, on
// a socket the real romana-cni binary connects to. Stop and Start are an
// agent restart (the socket goes away and comes back).
type agentServer struct {
	tb     testing.TB
	hostNS ns.NetNS
	sock   string
	plugin *Plugin
	cancel context.CancelFunc
	done   chan error
}

func startAgentServer(tb testing.TB, hostPath, sock string, p *Plugin) *agentServer {
	tb.Helper()
	h, err := ns.GetNS(hostPath)
	if err != nil {
		tb.Fatal(err)
	}
	p.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p.Timeout = 30 * time.Second
	a := &agentServer{tb: tb, hostNS: h, sock: sock, plugin: p}
	a.Start()
	tb.Cleanup(func() { a.Stop(); h.Close() })
	return a
}

// Start listens on the socket and serves until Stop.
func (a *agentServer) Start() {
	a.tb.Helper()
	ln, err := Listen(a.sock)
	if err != nil {
		a.tb.Fatal(err)
	}
	srv := &Server{Plugin: a.plugin, Log: a.plugin.Log,
		Do: func(f func() error) error { return a.hostNS.Do(func(ns.NetNS) error { return f() }) }}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- srv.Serve(ctx, ln, a.sock) }()
}

// Stop stops serving and waits until the socket is gone.
func (a *agentServer) Stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	if err := <-a.done; err != nil {
		a.tb.Errorf("agent CNI server: %v", err)
	}
	a.cancel = nil
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

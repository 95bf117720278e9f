package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/cni/install"
	"github.com/romana/romana/expect"
)

// EnvImages names the directory `make images` wrote; TestContainerd runs
// only when it is set.
const EnvImages = "ROMANA_IMAGES"

// TestContainerd imports the images `make images` wrote into a containerd
// of the test's own (its own root, state and socket; CRI off), checks the
// names containerd gives them, and runs each: the binaries' --version,
// the agent image's nft in the container's own network namespace, and
// install-cni onto directories of the test, as the DaemonSet's init
// container does on a node.
//
//	make images IMAGEDIR=/tmp/img && ROMANA_IMAGES=/tmp/img go test -run Containerd -v ./deploy
func TestContainerd(t *testing.T) {
	dir := os.Getenv(EnvImages)
	if dir == "" {
		t.Skipf("$%s is not set (make images, then point it at IMAGEDIR)", EnvImages)
	}
	for _, b := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("no %s: %v", b, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	list, err := os.ReadFile(filepath.Join(dir, "images.txt"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{} // component → image name
	for _, l := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		f := strings.Fields(l) // name digest file
		if len(f) != 3 {
			t.Fatalf("images.txt line %q", l)
		}
		names[strings.TrimSuffix(filepath.Base(f[2]), ".tar")] = f[0]
	}

	ctrd := startContainerd(t)
	// Not canceled when the test function returns: its cleanups (which run
	// after) use ctr too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	ctr := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", ctrd, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	// Container ids are the test's own, and so is runc's state directory:
	// runc keeps state by namespace and id under one root otherwise.
	id := func(name string) string { return filepath.Base(filepath.Dir(ctrd)) + "-" + name }
	runcRoot := filepath.Join(filepath.Dir(ctrd), "runc")
	for _, c := range Components {
		if out, err := ctr("images", "import", filepath.Join(dir, c.Name+".tar")); err != nil {
			t.Fatalf("import %s: %v\n%s", c.Name, err, out)
		}
	}
	out, err := ctr("images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Components {
		if !strings.Contains("\n"+out+"\n", "\n"+names[c.Name]+"\n") {
			t.Errorf("containerd has no image %s after the import; it has:\n%s", names[c.Name], out)
		}
	}

	run := func(name, img string, opts []string, args ...string) string {
		t.Helper()
		out, err := ctr(append(append([]string{"run", "--rm", "--runc-root", runcRoot}, opts...), append([]string{img, id(name)}, args...)...)...)
		if err != nil {
			t.Fatalf("ctr run %s %v: %v\n%s", img, args, err, out)
		}
		return out
	}
	for _, c := range Components {
		if out := run("v-"+c.Name, names[c.Name], nil, "/usr/bin/"+c.Name, "--version"); !strings.HasPrefix(out, c.Name+" version ") {
			t.Errorf("%s --version: %q", c.Name, out)
		}
	}
	// nft with its libraries, in the container's own network namespace
	// (ctr run makes one), with the capability the agent has.
	out = run("nft", names["romana-agent"], []string{"--cap-add", "CAP_NET_ADMIN"}, "/usr/sbin/nft",
		"add table inet romanaimg; add chain inet romanaimg c { type filter hook forward priority 0; }; list table inet romanaimg")
	if !strings.Contains(out, "hook forward") {
		t.Errorf("nft in the agent's image: %q", out)
	}
	// romanad with a read-only root and the ConfigMap's paths on volumes;
	// romana, exec'd in its container as root, is admin over the socket.
	data, sockDir := t.TempDir(), t.TempDir()
	rd := id("romanad")
	if out, err := ctr("run", "-d", "--runc-root", runcRoot, "--read-only", "--mount", "type=bind,src="+data+",dst=/var/lib/romana,options=rbind:rw",
		"--mount", "type=bind,src="+sockDir+",dst=/run/romana,options=rbind:rw", "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw",
		names["romanad"], rd, "/usr/bin/romanad", "--socket=/run/romana/romanad.sock", "--pki-dir=/var/lib/romana/pki",
		"--data-dir=/var/lib/romana/etcd", "--admin-config=/var/lib/romana/admin.conf", "--listen=127.0.0.1:9600",
		"--advertise=romanad.romana-system.svc,10.96.0.20"); err != nil {
		t.Fatalf("run romanad: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_, _ = ctr("task", "kill", "-s", "SIGKILL", rd)
		if err := expect.Poll(30*time.Second, func() error {
			out, err := ctr("task", "rm", rd)
			if err != nil && strings.Contains(out, "not found") {
				return nil
			}
			return err
		}); err != nil {
			t.Errorf("remove romanad's task: %v", err)
		}
		if out, err := ctr("containers", "rm", rd); err != nil {
			t.Errorf("remove romanad's container: %v\n%s", err, out)
		}
	})
	nexec := 0
	romana := func(args ...string) (string, error) {
		nexec++
		return ctr(append([]string{"task", "exec", "--exec-id", fmt.Sprint("e", nexec), rd, "/usr/bin/romana"}, args...)...)
	}
	if err := expect.Poll(60*time.Second, func() error { _, err := romana("network", "list"); return err }); err != nil {
		t.Fatalf("romana network list in romanad's container: %v", err)
	}
	if out, err := romana("network", "add", "pods", "--cidr", "10.64.0.0/10", "--field", "host=8", "--field", "tenant=6", "--field", "segment=4"); err != nil {
		t.Fatalf("romana network add: %v\n%s", err, out)
	}
	if out, _ := romana("network", "list"); !strings.Contains(out, "10.64.0.0/10") {
		t.Errorf("romana network list: %q", out)
	}
	for _, f := range []string{"admin.conf", "pki", "etcd"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Errorf("romanad's data volume: %v", err)
		}
	}

	// install-cni onto the test's directories.
	host := t.TempDir()
	bin, conf := filepath.Join(host, "bin"), filepath.Join(host, "net.d")
	for _, d := range []string{bin, conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount := func(src, dst string) string { return "type=bind,src=" + src + ",dst=" + dst + ",options=rbind:rw" }
	out = run("install", names["romana-agent"], []string{"--mount", mount(bin, "/host/opt/cni/bin"), "--mount", mount(conf, "/host/etc/cni/net.d")},
		"/usr/bin/romana-agent", "install-cni", "--bin-dir=/host/opt/cni/bin", "--conf-dir=/host/etc/cni/net.d")
	b, err := os.ReadFile(filepath.Join(conf, install.DefaultConfName))
	if err != nil || !bytes.Equal(b, install.Conflist("/run/romana-agent/cni.sock", 0)) {
		t.Errorf("install-cni wrote %q (%v); output %s", b, err, out)
	}
	cni := exec.Command(filepath.Join(bin, "romana-cni"), "--version")
	if o, err := cni.Output(); err != nil || !strings.HasPrefix(string(o), "romana-cni version ") {
		t.Errorf("the installed romana-cni --version: %q, %v", o, err)
	}
}

// startContainerd runs a containerd of the test's own and returns its
// socket; it is stopped, by its PID, when the test ends.
func startContainerd(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "romt-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("containerd log:\n%s", tail(string(b), 30))
		}
		// Shims outlive containerd when a task was not removed; they are
		// ours (started by our containerd, named by our socket): a leak.
		for _, pid := range shimsOf(sock) {
			t.Errorf("containerd shim %d of this test still runs: killed", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if err := expect.Poll(30*time.Second, func() error {
		_, err := os.Stat(sock)
		return err
	}); err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("containerd did not make its socket: %v\n%s", err, tail(string(b), 30))
	}
	return sock
}

// shimsOf returns the PIDs of containerd shims started for the containerd
// at sock.
func shimsOf(sock string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(args[0], "containerd-shim") && slices.Contains(args, sock) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder unmounts whatever is still mounted below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Fields(s.Text()); len(fs) > 1 && strings.HasPrefix(fs[1], dir+"/") {
			mounts = append(mounts, fs[1])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", mounts[i], err)
		}
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

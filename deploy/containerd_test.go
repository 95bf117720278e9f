package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctr := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", ctrd, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
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

	run := func(id, img string, opts []string, args ...string) string {
		t.Helper()
		out, err := ctr(append(append([]string{"run", "--rm"}, opts...), append([]string{img, id}, args...)...)...)
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

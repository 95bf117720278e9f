package kubenode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/romana/romana/kubetest"
	"github.com/romana/romana/sim"
)

var getOpts = metav1.GetOptions{}

// Config is what a node runs pods with.
type Config struct {
	// CNIPlugins are the CNI plugins the node's containerd may call, by
	// name (e.g. "romana-cni" → its binary); the reference "loopback"
	// plugin that containerd needs is added from /usr/lib/cni.
	CNIPlugins map[string]string
	// CNIConfig is the node's network configuration list (a .conflist).
	CNIConfig []byte
	// Images is an OCI layout tar (WriteImages) imported into containerd
	// before the kubelet starts; it must hold PauseImage.
	Images string
	// ClusterCIDR is the pods' range, for kube-proxy (traffic from outside
	// it to a Service is masqueraded).
	ClusterCIDR string

	// The fields below make a node that a network plugin is installed on
	// as on a real one, by a DaemonSet through hostPath volumes (the
	// Kubernetes demo); their zero values keep the test's own setup above.

	// ExtraImages are more OCI layout tars imported like Images.
	ExtraImages []string
	// Overlays are directories of the machine (e.g. /etc, /opt, /var/lib,
	// /run) that the node sees through an overlay: the machine's files
	// below, the node's writes above, in a tmpfs of its own mount
	// namespace. hostPath volumes under them are the node's own, like a
	// real node's disk, and vanish with the node.
	Overlays []string
	// NodeCNIDirs has containerd read the CNI configuration from
	// /etc/cni/net.d and run plugins from /opt/cni/bin, as on a real node,
	// instead of from CNIConfig and CNIPlugins; only the reference
	// loopback plugin is put there first. Both must be under Overlays.
	NodeCNIDirs bool
	// NetnsInRun has containerd mount the pods' network namespaces under
	// /run/netns (its default on a real node, where the network plugin's
	// DaemonSet mounts that directory), on a tmpfs of the node's mount
	// namespace made shared (so a HostToContainer mount sees new ones);
	// otherwise they are under containerd's state directory.
	NetnsInRun bool
	// ServeAPI also forwards the node's own address, port 6443, to the
	// apiserver: that address can be an endpoint of the `kubernetes`
	// Service, through which pods (in-cluster clients) reach the apiserver.
	ServeAPI bool
}

// Node is a real Kubernetes node in a simulated host's network namespace:
// containerd, kubelet and kube-proxy, each started with
// `nsenter --net=HOST-NS` in one private mount namespace (containerd's,
// made by `unshare --mount --propagation private`: the kubelet's and
// containerd's mounts, a tmpfs on /var/log among them, never reach the
// machine's). Everything lives under the test's temp dir, except what
// containerd's shims put in /run/containerd/s/ and the node's cgroups
// (cgroupfs, a root of its own): Start's cleanup removes both.
type Node struct {
	Name string
	Host *sim.Host

	work           string
	sock           string // containerd's gRPC socket
	cgroup         string // the kubelet's cgroupRoot, e.g. /romana-kn-1234-h1
	ctrd           *proc
	kubelet, proxy *proc
	conn           *grpc.ClientConn
	cri            runtimeapi.RuntimeServiceClient
	apiLns         []net.Listener
	cfg            Config
}

// apiPort is where a node reaches the apiserver: 127.0.0.1 in the host's
// namespace, forwarded by the test to the apiserver's 127.0.0.1.
const apiPort = 6443

// Start runs a node named like the host on h, registered with the kubetest
// cluster k, and waits until its Node object exists (not until it is
// Ready: that needs the CNI plugin's network, which may come later). It is
// stopped and cleaned when the test ends: kube-proxy and kubelet stopped,
// every pod sandbox stopped and removed through the CRI (so the CNI plugin
// sees its DELs), containerd stopped, any shim it left killed by PID and its
// socket removed, the cgroups removed.
func Start(t testing.TB, k *kubetest.Cluster, h *sim.Host, cfg Config) *Node {
	t.Helper()
	dir := Require(t)
	ctx := context.Background()
	n := &Node{Name: h.Name, Host: h, work: t.TempDir(), cfg: cfg}
	n.sock = filepath.Join(n.work, "c.sock")
	n.cgroup = fmt.Sprintf("/romana-kn-%d-%s", os.Getpid(), h.Name)
	t.Cleanup(func() { n.stop(t) })

	if err := n.makeCgroups(); err != nil {
		t.Fatal(err)
	}
	if !cfg.NodeCNIDirs {
		if err := n.writeCNI(cfg); err != nil {
			t.Fatal(err)
		}
	}
	sysctls, err := n.kernelDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.startContainerd(ctx, sysctls, cfg); err != nil {
		t.Fatal(err)
	}
	for _, img := range append([]string{cfg.Images}, cfg.ExtraImages...) {
		if out, err := exec.Command("ctr", "--address", n.sock, "-n", "k8s.io", "images", "import", img).CombinedOutput(); err != nil {
			t.Fatalf("node %s: import %s: %v\n%s", n.Name, img, err, out)
		}
	}
	if err := n.forwardAPI(k, net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort))); err != nil {
		t.Fatal(err)
	}
	if cfg.ServeAPI {
		if err := n.forwardAPI(k, netip.AddrPortFrom(h.Addr.Addr(), apiPort).String()); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := filepath.Join(n.work, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, k); err != nil {
		t.Fatal(err)
	}
	mnt := fmt.Sprintf("--mount=/proc/%d/ns/mnt", n.ctrd.cmd.Process.Pid)
	in := []string{"nsenter", "--net=" + h.Path, mnt, "--"}

	kcfg := filepath.Join(n.work, "kubelet.yaml")
	if err := os.WriteFile(kcfg, []byte(n.kubeletConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(n.work, "kubelet")
	if n.kubelet, err = start("kubelet "+n.Name, filepath.Join(n.work, "kubelet.log"), append(in,
		filepath.Join(dir, "kubelet"), "--config="+kcfg, "--kubeconfig="+kubeconfig,
		"--root-dir="+root, "--cert-dir="+filepath.Join(root, "pki"),
		"--hostname-override="+n.Name, "--node-ip="+h.Addr.Addr().String(), "--v=1")); err != nil {
		t.Fatal(err)
	}
	pcfg := filepath.Join(n.work, "kube-proxy.yaml")
	if err := os.WriteFile(pcfg, []byte(n.proxyConfig(kubeconfig, cfg.ClusterCIDR)), 0o644); err != nil {
		t.Fatal(err)
	}
	if n.proxy, err = start("kube-proxy "+n.Name, filepath.Join(n.work, "kube-proxy.log"), append(in,
		filepath.Join(dir, "kube-proxy"), "--config="+pcfg, "--v=1")); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, "Node "+n.Name+" registered by its kubelet", startTimeout, n.kubelet, func() error {
		_, err := k.Clientset.CoreV1().Nodes().Get(ctx, n.Name, getOpts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// makeCgroups creates the kubelet's cgroup root in every cgroup v1
// hierarchy (cpuset's with its parent's CPUs and memory nodes, which a
// new cpuset cgroup does not inherit).
func (n *Node) makeCgroups() error {
	for _, d := range cgroupDirs(false) {
		p := filepath.Join(d, n.cgroup)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("node %s: create cgroup %s: %w", n.Name, p, err)
		}
		if filepath.Base(d) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(d, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(p, f), b, 0o644); err != nil {
					return fmt.Errorf("node %s: write %s: %w", n.Name, filepath.Join(p, f), err)
				}
			}
		}
	}
	return nil
}

// cgroupDirs are the mounted cgroup v1 hierarchies; with unified, also
// the cgroup v2 one of a hybrid layout (where runc makes the containers'
// cgroups too).
func cgroupDirs(unified bool) []string {
	var dirs []string
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		d := filepath.Join("/sys/fs/cgroup", e.Name())
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil && (unified || e.Name() != "unified") {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// removeCgroups removes the cgroup root and everything under it, deepest
// first (the processes in them are gone).
func (n *Node) removeCgroups() error {
	var errs []error
	for _, d := range cgroupDirs(true) {
		root := filepath.Join(d, n.cgroup)
		var dirs []string
		filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, p := range dirs {
			if err := syscall.Rmdir(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// writeCNI makes the node's CNI directories: bin/ with links to the
// plugins and loopback, net.d/ with the configuration list.
func (n *Node) writeCNI(cfg Config) error {
	bin, conf := filepath.Join(n.work, "cni", "bin"), filepath.Join(n.work, "cni", "net.d")
	for _, d := range []string{bin, conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	plugins := map[string]string{"loopback": "/usr/lib/cni/loopback"}
	for name, path := range cfg.CNIPlugins {
		plugins[name] = path
	}
	for name, path := range plugins {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("node %s: CNI plugin %s: %w", n.Name, name, err)
		}
		if err := os.Symlink(path, filepath.Join(bin, name)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(conf, "10-romana.conflist"), cfg.CNIConfig, 0o644)
}

// kubeletKernel are the kernel settings the kubelet insists on (its
// setupKernelTunables), by path under /proc/sys.
var kubeletKernel = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// differing returns the settings of want whose current value (read by
// read) is another, with the wanted value.
func differing(want map[string]string, read func(key string) (string, error)) (map[string]string, error) {
	out := map[string]string{}
	for key, v := range want {
		got, err := read(key)
		if err != nil {
			return nil, fmt.Errorf("read kernel setting %s: %w", key, err)
		}
		if strings.TrimSpace(got) != v {
			out[key] = v
		}
	}
	return out, nil
}

// kernelDefaults returns, for each kernel setting the kubelet insists on
// (it checks them with protectKernelDefaults, and would change them
// machine-wide without), a file holding the value it wants where the
// machine's differs: bound over /proc/sys in the node's private mount
// namespace, so the kubelet reads what it wants and nothing global changes.
func (n *Node) kernelDefaults() (map[string]string, error) {
	diff, err := differing(kubeletKernel, func(key string) (string, error) {
		b, err := os.ReadFile("/proc/sys/" + key)
		return string(b), err
	})
	if err != nil {
		return nil, err
	}
	binds := map[string]string{}
	d := filepath.Join(n.work, "sysctl")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	for key, v := range diff {
		f := filepath.Join(d, strings.ReplaceAll(key, "/", "."))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o444); err != nil {
			return nil, err
		}
		binds["/proc/sys/"+key] = f
	}
	return binds, nil
}

// startContainerd starts containerd in the host's namespace and a new
// private mount namespace (with a tmpfs on /var/log, one on /var/lib/cni
// where the CNI library caches results, and the kernel-default binds), and waits until its CRI answers. Its CRI keeps containers'
// oom_score_adj at or above its own (restrict_oom_score_adj): the kubelet
// asks -998 for a sandbox, which needs CAP_SYS_RESOURCE, and a machine (a
// container itself, like CI's) may not grant it; the kubelet and
// kube-proxy are told to leave their own at 0 for the same reason.
func (n *Node) startContainerd(ctx context.Context, binds map[string]string, nc Config) error {
	cfg := filepath.Join(n.work, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(n.containerdConfig()), 0o644); err != nil {
		return err
	}
	script := "set -e"
	if len(nc.Overlays) > 0 {
		// One tmpfs holds every overlay's upper and work directories
		// (they must share a file system, which must not be an overlay).
		ovl := filepath.Join(n.work, "overlay")
		if err := os.MkdirAll(ovl, 0o755); err != nil {
			return err
		}
		script += fmt.Sprintf("; mount -t tmpfs tmpfs %s", ovl)
		for i, d := range nc.Overlays {
			// Mounts below d would stay in the mount table, hidden
			// under the overlay, and mislead lookups by path (containerd
			// takes the first mount of /run/netns for the one in use).
			script += fmt.Sprintf(`; for m in $(awk -v d=%s/ 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done`, d)
			up, wk := filepath.Join(ovl, fmt.Sprintf("up%d", i)), filepath.Join(ovl, fmt.Sprintf("wk%d", i))
			script += fmt.Sprintf("; mkdir %s %s; mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s", up, wk, d, up, wk, d)
		}
	}
	script += "; mount -t tmpfs tmpfs /var/log; mkdir -p /var/lib/cni; mount -t tmpfs tmpfs /var/lib/cni"
	if nc.NodeCNIDirs {
		script += "; mkdir -p /etc/cni/net.d /opt/cni/bin; cp /usr/lib/cni/loopback /opt/cni/bin/"
	}
	if nc.NetnsInRun {
		script += "; mkdir -p /run/netns; mount -t tmpfs tmpfs /run/netns; mount --make-shared /run/netns"
	}
	keys := make([]string, 0, len(binds))
	for k := range binds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		script += fmt.Sprintf("; mount --bind %s %s", binds[k], k)
	}
	script += `; exec "$@"`
	var err error
	n.ctrd, err = start("containerd "+n.Name, filepath.Join(n.work, "containerd.log"), []string{
		"nsenter", "--net=" + n.Host.Path, "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", script, "sh", "containerd", "--config", cfg})
	if err != nil {
		return err
	}
	n.conn, err = grpc.NewClient("unix://"+n.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("node %s: CRI client: %w", n.Name, err)
	}
	n.cri = runtimeapi.NewRuntimeServiceClient(n.conn)
	return waitFor(ctx, "containerd "+n.Name+" CRI", startTimeout, n.ctrd, func() error {
		if _, err := os.Stat(n.sock); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := n.cri.Version(cctx, &runtimeapi.VersionRequest{})
		return err
	})
}

func (n *Node) containerdConfig() string {
	w := n.work
	cniBin, cniConf := filepath.Join(w, "cni", "bin"), filepath.Join(w, "cni", "net.d")
	if n.cfg.NodeCNIDirs {
		cniBin, cniConf = "/opt/cni/bin", "/etc/cni/net.d"
	}
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  netns_mounts_under_state_dir = %[9]v
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = %[6]q
  conf_dir = %[7]q
  max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = %[8]q
`, filepath.Join(w, "root"), filepath.Join(w, "state"), n.sock, filepath.Join(w, "opt"), PauseImage,
		cniBin, cniConf, filepath.Join(w, "runc"), !n.cfg.NetnsInRun)
}

// kubeletConfig: cgroup v1 with cgroupfs and a root of the node's own;
// kernel defaults only checked; no eviction or image GC (a test's disk is
// whatever the machine has); the kubelet's servers on the host's loopback.
func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%s
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
protectKernelDefaults: true
oomScoreAdj: 0
failSwapOn: false
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "0%%"
  nodefs.available: "0%%"
  nodefs.inodesFree: "0%%"
  imagefs.available: "0%%"
  imagefs.inodesFree: "0%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
resolvConf: ""
`, n.sock, n.cgroup)
}

// proxyConfig: nftables mode; conntrack limits and timeouts left as the
// kernel has them (0: kube-proxy would otherwise set machine-wide sysctls).
func (n *Node) proxyConfig(kubeconfig, clusterCIDR string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: nftables
hostnameOverride: %s
clusterCIDR: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [%q]
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
`, kubeconfig, n.Name, clusterCIDR, n.Host.Addr.Addr().String()+"/32")
}

// forwardAPI listens on addr (127.0.0.1:apiPort, or the host's own
// address with ServeAPI) in the host's namespace and
// forwards each connection to the apiserver (on 127.0.0.1 of the test's
// namespace): the node's programs reach the apiserver, the machine's
// network is untouched.
func (n *Node) forwardAPI(k *kubetest.Cluster, addr string) error {
	u, err := url.Parse(k.Config.Host)
	if err != nil {
		return err
	}
	ln, err := n.Host.Listen("tcp", addr)
	if err != nil {
		return err
	}
	n.apiLns = append(n.apiLns, ln)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				wg.Wait()
			}()
		}
	}()
	return nil
}

func writeKubeconfig(path string, k *kubetest.Cluster) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{
		Server:                   "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort)),
		CertificateAuthorityData: k.Config.TLSClientConfig.CAData,
	}
	cfg.AuthInfos["node"] = &clientcmdapi.AuthInfo{Token: k.Config.BearerToken}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "node"}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// Command returns a command that runs args in the node's network and
// mount namespaces (where containerd mounts the pods' network namespaces:
// a CNI plugin that hands CNI_NETNS to a daemon, as romana-cni does to the
// agent, needs the daemon there, as a DaemonSet needs the host's mounts).
// Start it after Start returned.
func (n *Node) Command(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Host.Path,
		fmt.Sprintf("--mount=/proc/%d/ns/mnt", n.ctrd.cmd.Process.Pid), "--"}, args...)...)
}

// PodNetwork returns the network namespace of a pod running on this node
// (its sandbox's, through the sandbox process: /proc/PID/ns/net), for a
// test to connect from inside the pod.
func (n *Node) PodNetwork(ctx context.Context, pod *corev1.Pod) (*sim.Namespace, error) {
	resp, err := n.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": string(pod.UID)},
	}})
	if err != nil {
		return nil, fmt.Errorf("node %s: list sandboxes of pod %s/%s: %w", n.Name, pod.Namespace, pod.Name, err)
	}
	if len(resp.Items) != 1 {
		return nil, fmt.Errorf("node %s: pod %s/%s has %d ready sandboxes", n.Name, pod.Namespace, pod.Name, len(resp.Items))
	}
	st, err := n.cri.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: resp.Items[0].Id, Verbose: true})
	if err != nil {
		return nil, fmt.Errorf("node %s: status of sandbox %s: %w", n.Name, resp.Items[0].Id, err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Pid <= 0 {
		return nil, fmt.Errorf("node %s: sandbox %s: no pid in %q: %v", n.Name, resp.Items[0].Id, st.Info["info"], err)
	}
	return &sim.Namespace{Name: pod.Namespace + "/" + pod.Name, Path: fmt.Sprintf("/proc/%d/ns/net", info.Pid)}, nil
}

// Sandboxes returns how many pod sandboxes containerd has (any state).
func (n *Node) Sandboxes(ctx context.Context) (int, error) {
	resp, err := n.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return 0, err
	}
	return len(resp.Items), nil
}

// stop tears the node down (see Start); failures are test errors.
func (n *Node) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range []*proc{n.proxy, n.kubelet} {
		if p == nil {
			continue
		}
		if !p.stop(20 * time.Second) {
			t.Errorf("%s did not stop on SIGTERM", p.name)
		}
		if t.Failed() {
			t.Logf("%s's last lines (%s):\n%s", p.name, p.log, p.tail(25))
		}
	}
	for _, ln := range n.apiLns {
		ln.Close()
	}
	// The shims' sockets, read before the sandboxes go (each shim writes
	// its address into its bundle).
	addrs, _ := filepath.Glob(filepath.Join(n.work, "state", "io.containerd.runtime.v2.task", "*", "*", "address"))
	var sockets []string
	for _, a := range addrs {
		if b, err := os.ReadFile(a); err == nil {
			sockets = append(sockets, strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://"))
		}
	}
	if n.cri != nil {
		if done, _ := n.ctrd.exited(); !done {
			if resp, err := n.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
				t.Errorf("node %s: list sandboxes: %v", n.Name, err)
			} else {
				// Pods on the node's network last: a network plugin's
				// agent among them still answers the others' CNI DELs.
				items := resp.Items
				slices.SortStableFunc(items, func(a, b *runtimeapi.PodSandbox) int {
					return boolInt(n.hostNetwork(ctx, a.Id)) - boolInt(n.hostNetwork(ctx, b.Id))
				})
				for _, sb := range items {
					if _, err := n.cri.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
						t.Errorf("node %s: stop sandbox %s (%s/%s): %v", n.Name, sb.Id, sb.Metadata.Namespace, sb.Metadata.Name, err)
					}
					if _, err := n.cri.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
						t.Errorf("node %s: remove sandbox %s: %v", n.Name, sb.Id, err)
					}
				}
			}
		}
		n.conn.Close()
	}
	if n.ctrd != nil {
		if !n.ctrd.stop(20 * time.Second) {
			t.Errorf("%s did not stop on SIGTERM", n.ctrd.name)
		}
		if t.Failed() {
			t.Logf("%s's last lines (%s):\n%s", n.ctrd.name, n.ctrd.log, n.ctrd.tail(25))
		}
	}
	if pids := shims(n.sock); len(pids) > 0 {
		t.Errorf("node %s: containerd left shims %v: killing them", n.Name, pids)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		waitFor(ctx, "shims gone", 10*time.Second, nil, func() error {
			if left := shims(n.sock); len(left) > 0 {
				return fmt.Errorf("shims %v", left)
			}
			return nil
		})
	}
	for _, s := range sockets {
		if err := os.Remove(s); err == nil {
			t.Logf("node %s: removed shim socket %s", n.Name, s)
		}
	}
	if err := n.removeCgroups(); err != nil {
		t.Errorf("node %s: %v", n.Name, err)
	}
}

// hostNetwork reports whether a sandbox uses the node's network namespace.
func (n *Node) hostNetwork(ctx context.Context, id string) bool {
	st, err := n.cri.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		return false
	}
	return st.GetStatus().GetLinux().GetNamespaces().GetOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// shims returns the PIDs of containerd shims serving the containerd at
// sock (their command line says `-address SOCK`).
func shims(sock string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		if i := slices.Index(args, "-address"); i >= 0 && i+1 < len(args) && args[i+1] == sock {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WaitReady waits until the Node reports Ready.
func (n *Node) WaitReady(ctx context.Context, k *kubetest.Cluster) error {
	return waitFor(ctx, "Node "+n.Name+" Ready", startTimeout, n.kubelet, func() error {
		node, err := k.Clientset.CoreV1().Nodes().Get(ctx, n.Name, getOpts)
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("Ready %s: %s", c.Status, c.Message)
			}
		}
		return errors.New("no Ready condition")
	})
}

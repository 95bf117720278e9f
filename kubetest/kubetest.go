// Package kubetest runs a real kube-apiserver, on an etcd of its own, for
// tests: Start gives a test a fresh cluster control plane (no kubelet, no
// controller-manager, no scheduler) with the ClusterNetworkPolicy CRD
// installed, and client-go clients for it. It is test support: import it
// only from _test.go files.
//
// The kube-apiserver binary is built from Go modules and cached outside the
// repository by scripts/kube-apiserver.sh (`make kube-apiserver`; `make
// test` runs it). A test that finds no binary is skipped on a workstation
// and fails under CI=true.
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	npclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"
)

// Version is the kube-apiserver release the tests run; the Makefile's
// KUBE_VERSION builds the same one (TestMakefileBuildsVersion checks).
const Version = "v1.36.3"

// EnvBinary names a kube-apiserver binary to use instead of the cache's.
// When it is set, the binary must exist: a test fails rather than skips.
const EnvBinary = "ROMANA_KUBE_APISERVER"

// ServiceCIDR is the cluster's --service-cluster-ip-range.
const ServiceCIDR = "10.96.0.0/16"

// CNPCRDPath is the ClusterNetworkPolicy CRD inside the module
// sigs.k8s.io/network-policy-api, at the version go.mod requires.
const CNPCRDPath = "config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml"

// AdminUser is the user behind Cluster.Config: in group system:masters, so
// allowed everything (RBAC's superuser group).
const AdminUser = "kubetest-admin"

// startTimeout bounds each wait of Start (etcd, /readyz, the CRD, the
// default ServiceAccount): generous, as CI's 2 cores may be busy.
const startTimeout = 2 * time.Minute

// Cluster is a running kube-apiserver with its etcd, stopped when the test
// that started it ends. Its clients act as AdminUser.
type Cluster struct {
	// Config is the admin's client configuration (bearer token, the
	// server's CA). Copy it (rest.CopyConfig) before changing it.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file with the same credentials, for
	// programs under test that take --kubeconfig.
	Kubeconfig string
	// Clientset is client-go's typed client.
	Clientset kubernetes.Interface
	// Dynamic is client-go's dynamic client.
	Dynamic dynamic.Interface
	// Policy is the typed client of sigs.k8s.io/network-policy-api
	// (Policy.PolicyV1alpha2().ClusterNetworkPolicies()).
	Policy npclient.Interface
	// StartTime is how long Start took, from launching the apiserver to
	// the CRD established and the default ServiceAccount present.
	StartTime time.Duration
	// ReadyTime is how long the apiserver took to answer /readyz.
	ReadyTime time.Duration

	dir       string
	logFile   string
	extraArgs []string // StartWithArgs' apiserver flags
	waited    string   // the last not-ready answer of /readyz
}

// As returns a copy of the admin's configuration that impersonates user
// (with groups): the requests are authorized as that user by RBAC, so a
// test can check what a least-privilege identity may and may not do.
func (c *Cluster) As(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

// Log returns what the apiserver printed so far (its last lines on a failed
// test are logged automatically).
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logFile)
	return string(b)
}

// Binary returns the kube-apiserver to run: $ROMANA_KUBE_APISERVER when set,
// otherwise the cache's (CachePath). A missing binary is an error that says
// how to build it.
func Binary() (string, error) {
	path := os.Getenv(EnvBinary)
	from := "$" + EnvBinary
	if path == "" {
		p, err := CachePath()
		if err != nil {
			return "", err
		}
		path, from = p, "the cache"
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("kube-apiserver %s (%s): %w; build it with `make kube-apiserver` (scripts/kube-apiserver.sh)", path, from, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("kube-apiserver %s (%s) is not an executable file", path, from)
	}
	return path, nil
}

// CachePath is where scripts/kube-apiserver.sh caches the binary of Version:
// $TOOLS/kube-apiserver-VERSION/kube-apiserver, TOOLS defaulting to
// ~/.cache/romana-tools as in the Makefile.
func CachePath() (string, error) {
	tools := os.Getenv("TOOLS")
	if tools == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the kube-apiserver cache: %w", err)
		}
		tools = filepath.Join(home, ".cache", "romana-tools")
	}
	return filepath.Join(tools, "kube-apiserver-"+Version, "kube-apiserver"), nil
}

// Start runs etcd and kube-apiserver for the test, both on 127.0.0.1 only
// and on ports the kernel picks, waits until the apiserver is ready, the
// ClusterNetworkPolicy CRD is established and namespace "default" has its
// "default" ServiceAccount, and returns the cluster. Everything is stopped
// when the test ends (only the processes Start started, by PID).
//
// Without a binary (see Binary) the test is skipped, unless
// $ROMANA_KUBE_APISERVER is set or CI=true: then it fails.
//
// The apiserver authorizes with RBAC (the admin is a superuser) and admits
// with its default plugins; a small stand-in for kube-controller-manager's
// ServiceAccount controller gives every namespace its "default"
// ServiceAccount, which pods need.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartWithArgs(t)
}

// StartWithArgs is Start with more kube-apiserver flags, added after
// Start's own (a flag given twice takes its last value): for example
// --egress-selector-config-file, for a test that must reach kubelets
// through a proxy of its own.
func StartWithArgs(t testing.TB, apiserverArgs ...string) *Cluster {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(EnvBinary) != "" || os.Getenv("CI") == "true" {
			t.Fatalf("no kube-apiserver: %v", err)
		}
		t.Skipf("no kube-apiserver: %v", err)
	}
	crd, err := cnpCRD()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	dir := t.TempDir()
	c := &Cluster{dir: dir, logFile: filepath.Join(dir, "kube-apiserver.log"), extraArgs: apiserverArgs}

	etcdURL := startEtcd(t, filepath.Join(dir, "etcd"))
	token := randomHex(t, 32)
	writeFiles(t, dir, token)

	// Cleanups run last-in first-out: what is registered after the
	// apiserver's stop (the ServiceAccount controller) stops before it, and
	// etcd, registered first, stops last.
	host := runAPIServer(t, c, bin, etcdURL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.ReadyTime = time.Since(began)
	if c.waited != "" && c.ReadyTime > 10*time.Second {
		t.Logf("kubetest: kube-apiserver took %v to be ready; its last answer before: %s", c.ReadyTime.Round(time.Millisecond), c.waited)
	}

	caPEM, err := os.ReadFile(filepath.Join(dir, "certs", "apiserver.crt"))
	if err != nil {
		t.Fatalf("read the apiserver's self-signed certificate: %v", err)
	}
	c.Config = &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             -1, // no client-side rate limit: tests make bursts
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, host, caPEM, token); err != nil {
		t.Fatal(err)
	}
	if c.Clientset, err = kubernetes.NewForConfig(c.Config); err != nil {
		t.Fatalf("kubernetes client: %v", err)
	}
	if c.Dynamic, err = dynamic.NewForConfig(c.Config); err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	if c.Policy, err = npclient.NewForConfig(c.Config); err != nil {
		t.Fatalf("network-policy-api client: %v", err)
	}

	runServiceAccounts(t, c.Clientset)
	if err := installCRD(ctx, c, crd); err != nil {
		t.Fatalf("%v\n%s", err, tail(c.Log(), 30))
	}
	if err := wait(ctx, "ServiceAccount default/default", func() error {
		_, err := c.Clientset.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c.StartTime = time.Since(began)
	t.Logf("kubetest: kube-apiserver %s at %s: ready in %v, CRD and ServiceAccount in %v", Version, host, c.ReadyTime.Round(time.Millisecond), c.StartTime.Round(time.Millisecond))
	return c
}

// startEtcd starts an embedded etcd in dir on 127.0.0.1 (plain http: it
// holds only the test's cluster) and returns its client URL.
func startEtcd(t testing.TB, dir string) string {
	t.Helper()
	ec := embed.NewConfig()
	ec.Name = "kubetest"
	ec.Dir = dir
	loop := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{loop}, []url.URL{loop}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{loop}, []url.URL{loop}
	ec.InitialCluster = ec.Name + "=" + loop.String()
	ec.ListenMetricsUrls = nil
	ec.UnsafeNoFsync = true
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatalf("start etcd for kube-apiserver: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd for kube-apiserver: %v", err)
	case <-time.After(startTimeout):
		t.Fatalf("etcd for kube-apiserver: not ready after %v", startTimeout)
	}
	return "http://" + e.Clients[0].Addr().String()
}

// writeFiles writes the apiserver's token file (the admin's token) and its
// service-account signing key into dir.
func writeFiles(t testing.TB, dir, token string) {
	t.Helper()
	tokens := fmt.Sprintf("%s,%s,%s,system:masters\n", token, AdminUser, AdminUser)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runAPIServer starts the apiserver on a free loopback port, retrying with
// another port if the one picked was taken meanwhile, waits for /readyz
// and returns its URL. Its stop is registered with t.Cleanup.
func runAPIServer(t testing.TB, c *Cluster, bin, etcdURL string) string {
	t.Helper()
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		host, err := tryAPIServer(t, c, bin, etcdURL, port)
		if err == nil {
			return host
		}
		last = err
		if !strings.Contains(c.Log(), "address already in use") {
			break
		}
	}
	t.Fatalf("%v\n%s", last, tail(c.Log(), 40))
	return ""
}

func tryAPIServer(t testing.TB, c *Cluster, bin, etcdURL string, port int) (string, error) {
	t.Helper()
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.dir, "certs"),
		"--token-auth-file=" + filepath.Join(c.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--anonymous-auth=false",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(c.dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(c.dir, "sa.key"),
		"--service-cluster-ip-range=" + ServiceCIDR,
		// The "kubernetes" Service's endpoints would be 127.0.0.1, which
		// Endpoints validation refuses: write none.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--v=1",
	}
	args = append(args, c.extraArgs...)
	logf, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies without its cleanups, so does the apiserver
	// (strictly: when the OS thread that started it exits; Go keeps its
	// threads unless a goroutine exits locked to one).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	host := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitReady(c, host, exited); err != nil {
		stop()
		if errors.Is(err, errExited) {
			err = fmt.Errorf("kube-apiserver exited before it was ready: %v", waitErr)
		}
		return "", err
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("kube-apiserver's last lines (%s):\n%s", c.logFile, tail(c.Log(), 30))
		}
	})
	return host, nil
}

var errExited = errors.New("kube-apiserver exited")

// waitReady polls the apiserver's /readyz until it answers 200 (every
// post-start hook done: RBAC's bootstrap roles, the system namespaces'
// controller...), the process exits, or startTimeout passes. Before the
// server wrote its self-signed certificate there is nothing to verify it
// with, so each attempt first loads it.
func waitReady(c *Cluster, host string, exited <-chan struct{}) error {
	token, err := os.ReadFile(filepath.Join(c.dir, "tokens.csv"))
	if err != nil {
		return err
	}
	bearer, _, _ := strings.Cut(string(token), ",")
	var client *http.Client
	last := errors.New("no attempt yet")
	deadline := time.After(startTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			return errExited
		case <-deadline:
			return fmt.Errorf("kube-apiserver %s not ready after %v: %w", host, startTimeout, last)
		case <-tick.C:
		}
		if client == nil {
			pool := x509.NewCertPool()
			caPEM, err := os.ReadFile(filepath.Join(c.dir, "certs", "apiserver.crt"))
			if err != nil || !pool.AppendCertsFromPEM(caPEM) {
				last = fmt.Errorf("no serving certificate yet: %v", err)
				continue
			}
			client = &http.Client{
				Timeout:   5 * time.Second,
				Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
			}
			defer client.CloseIdleConnections()
		}
		req, err := http.NewRequest(http.MethodGet, host+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := client.Do(req)
		if err != nil {
			last = err
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Errorf("GET /readyz: %s: %s", resp.Status, failedChecks(body))
		c.waited = last.Error()
	}
}

// failedChecks keeps the failing lines of a /readyz answer.
func failedChecks(body []byte) string {
	var bad []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "[-]") {
			bad = append(bad, sc.Text())
		}
	}
	if len(bad) == 0 {
		return strings.TrimSpace(string(body))
	}
	return strings.Join(bad, "; ")
}

// runServiceAccounts stands in for kube-controller-manager's ServiceAccount
// controller: every namespace gets a "default" ServiceAccount, which the
// ServiceAccount admission plugin requires of a pod (it retries its lookup
// for a second or two, so a pod created right after its namespace is
// admitted). It stops when the test ends.
func runServiceAccounts(t testing.TB, cs kubernetes.Interface) {
	ctx, cancel := context.WithCancel(context.Background())
	f := informers.NewSharedInformerFactory(cs, 0)
	ensure := func(obj any) {
		ns, ok := obj.(*corev1.Namespace)
		if !ok || ns.Status.Phase == corev1.NamespaceTerminating {
			return
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) && ctx.Err() == nil && !apierrors.IsForbidden(err) {
			// Forbidden: the namespace is being deleted.
			t.Logf("kubetest: create ServiceAccount %s/default: %v", ns.Name, err)
		}
	}
	_, err := f.Core().V1().Namespaces().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    ensure,
		UpdateFunc: func(_, obj any) { ensure(obj) },
	})
	if err != nil {
		t.Fatalf("namespace informer: %v", err)
	}
	f.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		f.Shutdown() // waits for the handlers: none logs after the test
	})
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRD creates the CRD (YAML) and waits until it is Established and
// its resources are served.
func installCRD(ctx context.Context, c *Cluster, crdYAML []byte) error {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(crdYAML, &obj.Object); err != nil {
		return fmt.Errorf("decode ClusterNetworkPolicy CRD: %w", err)
	}
	name := obj.GetName()
	if _, err := c.Dynamic.Resource(crdGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create CRD %s: %w", name, err)
	}
	if err := wait(ctx, "CRD "+name+" Established", func() error {
		got, err := c.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", conds)
	}); err != nil {
		return err
	}
	return wait(ctx, "ClusterNetworkPolicies served", func() error {
		_, err := c.Policy.PolicyV1alpha2().ClusterNetworkPolicies().List(ctx, metav1.ListOptions{Limit: 1})
		return err
	})
}

// wait polls cond every 50 ms until it returns nil, or fails with its last
// error after startTimeout.
func wait(ctx context.Context, what string, cond func() error) error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not there after %v: %w", what, startTimeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

var crdOnce = sync.OnceValues(func() ([]byte, error) {
	// The CRD is read from the module cache, at the version go.mod
	// requires: the same module gives the Go types and client, so the two
	// cannot drift apart, and no 130 kB copy lives in the repository. It
	// needs `go` on PATH and the module's source, which building this
	// package fetched already.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/network-policy-api").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("find module sigs.k8s.io/network-policy-api (go list -m): %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return nil, errors.New("find module sigs.k8s.io/network-policy-api: go list -m gave no directory (run go mod download)")
	}
	b, err := os.ReadFile(filepath.Join(dir, CNPCRDPath))
	if err != nil {
		return nil, fmt.Errorf("read the ClusterNetworkPolicy CRD: %w", err)
	}
	return b, nil
})

// cnpCRD returns the ClusterNetworkPolicy CRD's YAML.
func cnpCRD() ([]byte, error) { return crdOnce() }

func writeKubeconfig(path, host string, caPEM []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[AdminUser] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: AdminUser}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

//go:build conformance

package main

// make conformance: upstream suites against a real cluster. Not part of
// make test (the build tag keeps it out): it takes about an hour.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/romana/romana/bench/docblock"
	"github.com/romana/romana/conformance"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/kubenode"
	"github.com/romana/romana/kubetest"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// The environment make conformance sets.
const (
	// envE2E is the directory of scripts/kube-e2e.sh's e2e.test and kubectl.
	envE2E = "ROMANA_KUBE_E2E"
	// envNPAPI is the directory of its network-policy-api conformance.test.
	envNPAPI = "ROMANA_NPAPI_CONFORMANCE"
	// envDoc names docs/conformance.md, whose results block is rewritten.
	envDoc = "ROMANA_CONFORMANCE_DOC"
	// envOut is a directory that keeps the suites' logs and reports.
	envOut = "ROMANA_CONFORMANCE_OUT"
	// envSuites picks suites: "netpol", "cnp" or both (default), comma
	// separated; envFocus narrows both (a regexp over the NetworkPolicy
	// e2e's names, and over the ClusterNetworkPolicy suite's case names),
	// for debugging.
	envSuites = "ROMANA_CONFORMANCE_SUITES"
	envFocus  = "ROMANA_CONFORMANCE_FOCUS"
)

// The image the ClusterNetworkPolicy suite's manifests name
// (conformance/base/manifests.yaml at v0.3.0).
const npapiAgnhost = "registry.k8s.io/e2e-test-images/agnhost:2.45"

// noSCTP is why the SCTP cases are skipped.
const noSCTP = "SCTP: this kernel has no SCTP (/proc/sys/net/sctp is absent), so no SCTP socket can be opened"

// netpolFocus selects Kubernetes' NetworkPolicy e2e (test/e2e/network/netpol:
// "Netpol", "Netpol [LinuxOnly]" and "Netpol API").
const netpolFocus = `\[sig-network\] Netpol`

var netpolSkips = []conformance.Skip{{Pattern: regexp.MustCompile(`SCTPConnectivity`), Cause: noSCTP}}

// The ClusterNetworkPolicy suite's SCTP cases, skipped with -test.skip.
var (
	cnpSCTP  = []string{"CNPAdminTierEgressSCTP", "CNPAdminTierIngressSCTP", "CNPBaselineTierEgressSCTP", "CNPBaselineTierIngressSCTP"}
	cnpSkips = []conformance.Skip{{Pattern: regexp.MustCompile(`SCTP$`), Cause: noSCTP}}
)

func TestConformance(t *testing.T) {
	simtest.Require(t, "nft", "ping")
	e2eDir, npDir := os.Getenv(envE2E), os.Getenv(envNPAPI)
	if e2eDir == "" || npDir == "" {
		t.Fatalf("$%s and $%s must name the binaries of scripts/kube-e2e.sh (run make conformance)", envE2E, envNPAPI)
	}
	suites := os.Getenv(envSuites)
	if suites == "" {
		suites = "cnp,netpol"
	}
	out := os.Getenv(envOut)
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	began := time.Now()

	// The apiserver reaches kubelets (exec into the suites' agnhost pods)
	// through the proxy, which dials 127.0.0.1:10250 inside the node's
	// host namespace.
	work := t.TempDir()
	sock := filepath.Join(work, "kubelet-proxy.sock")
	proxy, err := conformance.ListenKubeletProxy(sock, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	egress := filepath.Join(work, "egress.yaml")
	if err := os.WriteFile(egress, []byte(conformance.EgressSelectorConfig(sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rlog, err := os.Create(filepath.Join(out, "romanad.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rlog.Close() })
	hosts := []string{"h1", "h2"}
	kn := startKubeNodesWith(t, hosts, kubeNodesOptions{
		agentExe:      exe,
		resync:        2 * time.Second,
		apiserverArgs: []string{"--egress-selector-config-file=" + egress},
		romanad:       []servertest.Option{servertest.WithLogger(slog.New(slog.NewTextHandler(rlog, nil)))},
		// 10 tenant bits: every NetworkPolicy case makes three namespaces
		// (tenants), 4 bits ran out after five cases.
		fields: []plan.Field{{Name: "host", Bits: 4}, {Name: "tenant", Bits: 10}, {Name: "segment", Bits: 2}},
		beforeControlPlane: func(k *kubetest.Cluster) {
			if strings.Contains(suites, "cnp") {
				installExperimentalCRD(t, k)
			}
		},
		images: func(bin, path string) { writeConformanceImages(t, bin, path) },
		onHost: func(name string, h *sim.Host, ip netip.Addr) {
			proxy.AddNode(dialIn(h.Namespace), name, ip.String())
		},
		logs: out, // the agents' logs outlive the run
	})
	k := kn.k
	clusterUp := time.Since(began)

	var failed []string
	header := func() string {
		return fmt.Sprintf("Run of %s, %d nodes, cluster up in %s; load average (1, 5, 15 min) at the end: %s.\n\n",
			time.Now().UTC().Format("2006-01-02 15:04 UTC"), len(hosts), clusterUp.Round(time.Second), loadAverage())
	}
	if strings.Contains(suites, "cnp") {
		start := time.Now()
		cases := runCNPConformance(t, k, npDir, out)
		var b bytes.Buffer
		b.WriteString(header())
		conformance.Render(&b, "ClusterNetworkPolicy conformance (sigs.k8s.io/network-policy-api v0.3.0)", cases)
		fmt.Fprintf(&b, "Suite run: %s.\n", time.Since(start).Round(time.Second))
		writeResults(t, out, "cnp", b.String())
		failed = append(failed, failures(cases)...)
	}
	if strings.Contains(suites, "netpol") {
		start := time.Now()
		cases := runNetpolE2E(t, k, e2eDir, out)
		var b bytes.Buffer
		b.WriteString(header())
		conformance.Render(&b, "Kubernetes NetworkPolicy e2e (k8s.io/kubernetes "+kubetest.Version+" test/e2e/network/netpol)", cases)
		fmt.Fprintf(&b, "Suite run: %s.\n", time.Since(start).Round(time.Second))
		writeResults(t, out, "netpol", b.String())
		failed = append(failed, failures(cases)...)
	}
	for _, f := range failed {
		t.Errorf("failed: %s", f)
	}
}

// installExperimentalCRD replaces kubetest's ClusterNetworkPolicy CRD (the
// standard channel's) with the experimental channel's of the same module
// version: the suite's named-port and nodes-peer cases (features Romana
// compiles) use fields only that one accepts. It waits until the apiserver
// admits a policy with a nodes peer (a server-side dry run).
func installExperimentalCRD(t *testing.T, k *kubetest.Cluster) {
	t.Helper()
	ctx := context.Background()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/network-policy-api").Output()
	if err != nil {
		t.Fatalf("find module sigs.k8s.io/network-policy-api: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "config/crd/experimental/policy.networking.k8s.io_clusternetworkpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &crd.Object); err != nil {
		t.Fatalf("decode the experimental CRD: %v", err)
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	old, err := k.Dynamic.Resource(gvr).Get(ctx, crd.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	crd.SetResourceVersion(old.GetResourceVersion())
	if _, err := k.Dynamic.Resource(gvr).Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update CRD %s to the experimental channel: %v", crd.GetName(), err)
	}
	probe := &npv1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "romana-crd-probe"},
		Spec: npv1alpha2.ClusterNetworkPolicySpec{Tier: npv1alpha2.AdminTier, Priority: 1,
			Subject: npv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
			Egress: []npv1alpha2.ClusterNetworkPolicyEgressRule{{Action: npv1alpha2.ClusterNetworkPolicyRuleActionAccept,
				To: []npv1alpha2.ClusterNetworkPolicyEgressPeer{{Nodes: &metav1.LabelSelector{}}}}}}}
	expect.Eventually(t, "the experimental CRD served (a nodes peer admitted)", wait, func() error {
		_, err := k.Policy.PolicyV1alpha2().ClusterNetworkPolicies().Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	})
}

// writeResults writes one suite's results block into out and, with
// $ROMANA_CONFORMANCE_DOC, between that suite's markers in
// docs/conformance.md (under an exclusive lock of the file: two runs of
// single suites may end together).
func writeResults(t *testing.T, out, suite, block string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(out, suite+"-results.md"), []byte(block), 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("results (also in %s):\n%s", filepath.Join(out, suite+"-results.md"), block)
	doc := os.Getenv(envDoc)
	if doc == "" {
		return
	}
	f, err := os.Open(doc)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Error(err)
		return
	}
	if err := docblock.Update(doc, "<!-- "+suite+" results begin -->", "<!-- "+suite+" results end -->", block); err != nil {
		t.Error(err)
	}
}

func failures(cases []conformance.Case) []string {
	var f []string
	for _, c := range cases {
		if c.State == conformance.Failed {
			f = append(f, c.Suite+": "+c.Name)
		}
	}
	return f
}

// writeConformanceImages writes kubenode's test images (agnhost and pause
// under the names the e2e suites of kubetest.Version reference) and the
// agnhost the ClusterNetworkPolicy suite names, with a /bin/bash stand-in
// (package conformance/bashshim) because its manifests run `/bin/bash -c`,
// as one OCI layout tar. That agnhost runs `agnhost pause` when a
// container gives no command, as upstream's image does (CMD ["pause"]).
func writeConformanceImages(t *testing.T, bin, path string) {
	t.Helper()
	agnhost, err := os.ReadFile(filepath.Join(bin, "agnhost"))
	if err != nil {
		t.Fatal(err)
	}
	shim := filepath.Join(t.TempDir(), "bash")
	build := exec.Command("go", "build", "-o", shim, "github.com/romana/romana/conformance/bashshim")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the bash stand-in: %v\n%s", err, out)
	}
	bash, err := os.ReadFile(shim)
	if err != nil {
		t.Fatal(err)
	}
	files := []kubenode.File{{Path: "agnhost", Mode: 0o755, Data: agnhost}, {Path: "tmp/.keep", Mode: 0o644}}
	withBash := append(files[:2:2], kubenode.File{Path: "bin/bash", Mode: 0o755, Data: bash})
	var buf bytes.Buffer
	if err := kubenode.WriteLayout(&buf,
		kubenode.Image{Name: kubenode.AgnhostImage, Entrypoint: []string{"/agnhost"}, Files: files},
		kubenode.Image{Name: kubenode.PauseImage, Entrypoint: []string{"/agnhost", "pause"}, Files: files},
		kubenode.Image{Name: npapiAgnhost, Entrypoint: []string{"/agnhost", "pause"}, Files: withBash},
	); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runCNPConformance runs the network-policy-api conformance suite (its
// test binary, through test2json) with every feature Romana supports, the
// SCTP cases left out.
func runCNPConformance(t *testing.T, k *kubetest.Cluster, dir, out string) []conformance.Case {
	t.Helper()
	report := filepath.Join(out, "cnp.jsonl")
	run := "^TestConformance$"
	if extra := os.Getenv(envFocus); extra != "" {
		run += "/" + extra
	}
	f, err := os.Create(report)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("go", "tool", "test2json", "-t", "-p", "network-policy-api/conformance",
		filepath.Join(dir, "conformance.test"), "-test.v=test2json", "-test.run", run,
		"-test.skip", "^TestConformance$/SCTP$", "-test.timeout", "2h", "-all-features", "-debug")
	// SCTP probes inside other cases are logged and not made (see
	// scripts/kube-e2e.sh): without it the first one would end its case.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+k.Kubeconfig, "NPAPI_SKIP_SCTP_PROBES=1")
	cmd.Stdout, cmd.Stderr = f, f
	start := time.Now()
	t.Logf("network-policy-api conformance: running (output in %s)", report)
	runErr := cmd.Run()
	t.Logf("network-policy-api conformance: ended in %v (%v)", time.Since(start).Round(time.Second), runErr)
	f.Seek(0, 0)
	all := make([]string, len(cnpSCTP))
	for i, n := range cnpSCTP {
		all[i] = "TestConformance/" + n
	}
	cases, err := conformance.ParseGoTest(f, "ClusterNetworkPolicy", 2, all, cnpSkips)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases { // cases that mix SCTP probes with others
		if c.State == conformance.Failed && slices.Equal(c.FailedProtocols, []string{"sctp"}) {
			cases[i].Reason = "only its SCTP probes failed (" + noSCTP + "): " + c.Reason
		}
	}
	if len(cases) == 0 {
		t.Errorf("network-policy-api conformance ran no case (%v); see %s", runErr, report)
	}
	return cases
}

// runNetpolE2E runs e2e.test focused on the NetworkPolicy e2e, SCTP left
// out.
func runNetpolE2E(t *testing.T, k *kubetest.Cluster, dir, out string) []conformance.Case {
	t.Helper()
	report := filepath.Join(out, "netpol.json")
	logPath := filepath.Join(out, "netpol.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	focus := netpolFocus
	if extra := os.Getenv(envFocus); extra != "" {
		focus = netpolFocus + ".*" + extra
	}
	cmd := exec.Command(filepath.Join(dir, "e2e.test"),
		"--kubeconfig="+k.Kubeconfig, "--provider=skeleton", "--kubectl-path="+filepath.Join(dir, "kubectl"),
		"--ginkgo.focus="+focus, "--ginkgo.skip=SCTPConnectivity",
		"--ginkgo.json-report="+report, "--ginkgo.no-color", "--ginkgo.v", "--ginkgo.timeout=3h",
		"--node-schedulable-timeout=5m", "--disable-log-dump", "--report-dir="+out)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	t.Logf("NetworkPolicy e2e: running (log in %s)", logPath)
	runErr := cmd.Run()
	t.Logf("NetworkPolicy e2e: ended in %v (%v)", time.Since(start).Round(time.Second), runErr)
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("NetworkPolicy e2e wrote no report (%v): %v; see %s", runErr, err, logPath)
	}
	cases, err := conformance.ParseGinkgo(data, "NetworkPolicy", regexp.MustCompile(focus), netpolSkips)
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

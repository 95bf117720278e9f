package kubenode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/romana/romana/kubetest"
)

// startTimeout bounds each wait of the harness: generous, as CI's 2 cores
// may be busy.
const startTimeout = 2 * time.Minute

// StartControlPlane runs kube-scheduler and kube-controller-manager (every
// default controller: Deployments, ReplicaSets, EndpointSlices, node
// lifecycle, namespaces, garbage collection, kube-root-ca.crt) against the
// kubetest cluster, in the test's own network namespace (they reach the
// apiserver on 127.0.0.1 and serve nothing). They stop, by PID, when the
// test ends.
func StartControlPlane(t testing.TB, k *kubetest.Cluster) {
	t.Helper()
	dir := Require(t)
	work := t.TempDir()
	ca := filepath.Join(work, "ca.crt")
	if err := os.WriteFile(ca, k.Config.TLSClientConfig.CAData, 0o644); err != nil {
		t.Fatal(err)
	}
	common := []string{"--kubeconfig=" + k.Kubeconfig, "--leader-elect=false", "--secure-port=0", "--v=1"}
	sched, err := start("kube-scheduler", filepath.Join(work, "kube-scheduler.log"),
		append([]string{filepath.Join(dir, "kube-scheduler")}, common...))
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, sched)
	kcm, err := start("kube-controller-manager", filepath.Join(work, "kube-controller-manager.log"),
		append([]string{filepath.Join(dir, "kube-controller-manager"),
			"--root-ca-file=" + ca,
			"--use-service-account-credentials=false",
			"--controllers=*",
			// Nodes of a test are gone when it ends: mark them not ready soon.
			"--node-monitor-grace-period=20s",
		}, common...))
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, kcm)
	// Without leader election neither holds a lease to wait for: wait
	// for a controller's visible work instead, the root CA ConfigMap in
	// "default", and check that the scheduler is still running.
	ctx := context.Background()
	if err := waitFor(ctx, "kube-root-ca.crt in default (kube-controller-manager)", startTimeout, kcm, func() error {
		_, err := k.Clientset.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", getOpts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if done, err := sched.exited(); done {
		t.Fatalf("kube-scheduler exited (%v):\n%s", err, sched.tail(30))
	}
}

// stopAtEnd stops p when the test ends and logs its last lines if the test
// failed.
func stopAtEnd(t testing.TB, p *proc) {
	t.Cleanup(func() {
		if !p.stop(20 * time.Second) {
			t.Errorf("%s did not stop on SIGTERM", p.name)
		}
		if t.Failed() {
			t.Logf("%s's last lines (%s):\n%s", p.name, p.log, p.tail(25))
		}
	})
}

// String is for error messages.
func (p *proc) String() string { return fmt.Sprintf("%s (pid %d)", p.name, p.cmd.Process.Pid) }

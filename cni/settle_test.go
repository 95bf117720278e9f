package cni

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
)

// fakeSettle plays the agent's Settled: each call records its addresses
// and returns what the test sends on answer.
type fakeSettle struct {
	mu     sync.Mutex
	calls  [][]api.Address
	called chan struct{}
	answer chan error
}

func (f *fakeSettle) wait(ctx context.Context, addrs []api.Address) error {
	f.mu.Lock()
	f.calls = append(f.calls, addrs)
	f.mu.Unlock()
	f.called <- struct{}{}
	select {
	case err := <-f.answer:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestLibcniKubernetesSettle: an ADD for a pod adds the host route only
// after Settle (the agent's firewall holding the pod's sets) returned, for
// the addresses romanad allocated; a Settle error fails the ADD as "try
// again later" and undoes it. ADDs that name no pod do not wait.
func TestLibcniKubernetesSettle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	fs := &fakeSettle{called: make(chan struct{}), answer: make(chan error)}
	sock := filepath.Join(t.TempDir(), "agent", "cni.sock")
	startAgentServer(t, e.hostPath, sock, &Plugin{Romanad: e.romanad.ClientAs(t, pki.Host(testHost)), Host: testHost, Server: e.server,
		Settle: fs.wait})
	list := confList(t, "1.1.0", sock, `,"kubernetes":true`)
	if _, err := e.rd.PutPod(ctx, api.Pod{Namespace: "shop", Name: "web-0", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	kubelet := func(id, netns string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "eth0", Args: [][2]string{
			{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "web-0"}, {"K8S_POD_UID", "u"}, {"IgnoreUnknown", "1"}}}
	}
	hostRoute := func(ip string) string {
		return strings.TrimSpace(run(t, "ip", "-n", e.host, "route", "show", ip+"/32"))
	}

	// Released: the route comes after Settle, for the allocated address.
	n1, p1 := e.container(t, "s1")
	done := make(chan error, 1)
	go func() { _, err := e.add(t, e.cfg, list, kubelet("sctr1", p1)); done <- err }()
	<-fs.called
	a, err := e.rd.GetAddress(ctx, AllocationName("sctr1", "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	got := fs.calls[0]
	fs.mu.Unlock()
	if len(got) != 1 || got[0].Name != a.Name || got[0].IP != a.IP {
		t.Errorf("Settle called with %+v; want the allocation %+v", got, a)
	}
	if r := hostRoute(a.IP.String()); r != "" {
		t.Errorf("host route to %s while Settle waits: %s", a.IP, r)
	}
	fs.answer <- nil
	if err := <-done; err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if r := hostRoute(a.IP.String()); r == "" {
		t.Errorf("no host route to %s after the ADD", a.IP)
	}
	if err := e.cfg.DelNetworkList(ctx, list, kubelet("sctr1", p1)); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, "sctr1", "eth0", n1)

	// Failed: code 11, undone.
	n2, p2 := e.container(t, "s2")
	go func() { _, err := e.add(t, e.cfg, list, kubelet("sctr2", p2)); done <- err }()
	<-fs.called
	fs.answer <- errors.New("fake: the firewall did not apply")
	err = <-done
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "the firewall did not apply") {
		t.Fatalf("ADD with Settle failing: %v; want code 11 with the reason", err)
	}
	e.assertGone(t, "sctr2", "eth0", n2)

	// No pod named (Kubernetes mode off): no wait.
	n3, p3 := e.container(t, "s3")
	plain := confList(t, "1.1.0", sock, "")
	rt := &libcni.RuntimeConf{ContainerID: "sctr3", NetNS: p3, IfName: "eth0"}
	if _, err := e.add(t, e.cfg, plain, rt); err != nil {
		t.Fatalf("ADD without a pod: %v", err)
	}
	fs.mu.Lock()
	if n := len(fs.calls); n != 2 {
		t.Errorf("Settle called %d times; want 2 (not for the ADD naming no pod)", n)
	}
	fs.mu.Unlock()
	if err := e.cfg.DelNetworkList(ctx, plain, rt); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, "sctr3", "eth0", n3)
}

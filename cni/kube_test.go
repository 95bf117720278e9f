package cni

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

// TestLibcniKubernetes: with "kubernetes": true in the network config, an
// ADD with a kubelet's CNI_ARGS gets its address from the tenant and
// segment of the pod's record at romanad (not from K8S_POD_NAMESPACE and
// the config's defaults), whether the record is there already or written
// while the ADD waits for it; the address names the pod.
func TestLibcniKubernetes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	list := confList(t, "1.1.0", e.sock, `,"kubernetes":true`)
	kubelet := func(id, ns, pod, netns string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "eth0", Args: [][2]string{
			{"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", pod}, {"K8S_POD_INFRA_CONTAINER_ID", id},
			{"K8S_POD_UID", "uid-" + id}, {"IgnoreUnknown", "1"}}}
	}
	check := func(id, ns, pod, tenant, segment string) {
		t.Helper()
		a, err := e.rd.GetAddress(ctx, AllocationName(id, "eth0"))
		if err != nil || a.Tenant != tenant || a.Segment != segment ||
			a.Attrs[api.AttrK8sNamespace] != ns || a.Attrs[api.AttrK8sPod] != pod || a.Attrs[AttrContainerID] != id {
			t.Errorf("address of pod %s/%s: %+v, %v; want tenant %s, segment %s", ns, pod, a, err, tenant, segment)
		}
	}

	// The record is there: namespace "shop" is tenant acme, segment web.
	if _, err := e.rd.PutPod(ctx, api.Pod{Namespace: "shop", Name: "web-0", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	n1, p1 := e.container(t, "k1")
	rt1 := kubelet("kctr1", "shop", "web-0", p1)
	if _, err := e.add(t, e.cfg, list, rt1); err != nil {
		t.Fatalf("ADD pod shop/web-0: %v", err)
	}
	check("kctr1", "shop", "web-0", "acme", "web")

	// The record comes while the ADD waits for it.
	n2, p2 := e.container(t, "k2")
	rt2 := kubelet("kctr2", "shop", "web-1", p2)
	type added struct {
		res *current.Result
		err error
	}
	done := make(chan added, 1)
	go func() {
		r, err := e.cfg.AddNetworkList(ctx, list, rt2)
		if err != nil {
			done <- added{nil, err}
			return
		}
		res, err := current.NewResultFromResult(r)
		done <- added{res, err}
	}()
	expect.Eventually(t, "romanad waits for the record of shop/web-1", 30*time.Second, func() error {
		if n := e.romanad.Registry().Stats().PodWaits; n != 1 {
			return fmt.Errorf("%d allocations waiting", n)
		}
		return nil
	})
	if _, err := e.rd.PutPod(ctx, api.Pod{Namespace: "shop", Name: "web-1", Tenant: "default-tenant", Segment: "tools"}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil {
		t.Fatalf("ADD pod shop/web-1: %v", r.err)
	}
	check("kctr2", "shop", "web-1", "default-tenant", "tools")

	for i, rt := range []*libcni.RuntimeConf{rt1, rt2} {
		if err := e.cfg.DelNetworkList(ctx, list, rt); err != nil {
			t.Fatalf("DEL %s: %v", rt.ContainerID, err)
		}
		e.assertGone(t, rt.ContainerID, "eth0", []string{n1, n2}[i])
	}
}

package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

func (r *rig) runSettled(s *Settled) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: r.fw,
			Metrics: r.metrics, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, Settled: s})
	}()
	r.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("Run: %v", err)
		}
	})
}

// An address allocated for a pod that an address set lists (by name)
// enters the set's nft elements from its own watch event, with no write
// to the set; and Settled.Wait returns only once the table holds it: the
// CNI plugin adds the pod's host route after that.
func TestSettledPodMember(t *testing.T) {
	w := newWorld()
	w.snap.Policies = []api.Policy{{Name: "web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Set: "web"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Set: "clients"}}, Protocol: "tcp", Ports: []uint16{80}}}}}
	w.snap.AddressSets = []api.AddressSet{{Name: "web", Pods: []string{"shop/web-1"}}, {Name: "clients", Pods: []string{"shop/client"}}}
	r := newRig(t, w.snap)
	s := &Settled{}
	r.runSettled(s)
	expect.Eventually(t, "initial", within, r.converged)

	k8s := func(a api.Address, pod string) api.Address {
		ns, name, _ := strings.Cut(pod, "/")
		a.Attrs = map[string]string{api.AttrK8sNamespace: ns, api.AttrK8sPod: name}
		return a
	}
	web := k8s(w.address("c1:eth0", 1, "acme", 1, 1, "romana0000001"), "shop/web-1")
	client := k8s(w.address("c2:eth0", 2, "acme", 1, 1, ""), "shop/client")
	other := k8s(w.address("c3:eth0", 1, "acme", 1, 2, "romana0000003"), "shop/db-0")
	wait := func(a api.Address) chan error {
		done := make(chan error, 1)
		go func() { done <- s.Wait(context.Background(), []api.Address{a}) }()
		return done
	}
	// Waiting before romanad has the address: not released by passes that
	// do not hold it.
	webDone := wait(web)
	expect.Eventually(t, "the wait is registered", within, func() error {
		if n := s.Waiting(); n != 1 {
			return fmt.Errorf("%d waiting", n)
		}
		return nil
	})
	r.src.put(api.KindAddressSet, "unrelated", api.AddressSet{Name: "unrelated"})
	expect.Eventually(t, "an unrelated change applied", within, r.converged)
	select {
	case err := <-webDone:
		t.Fatalf("Wait returned (%v) before the address existed", err)
	default:
	}
	r.kernel.AddLink(web.Interface, "veth")
	r.src.put(api.KindAddress, web.Name, web)
	if err := <-webDone; err != nil {
		t.Fatal(err)
	}
	// At that moment, not eventually: the table already has the element.
	if d := r.nft.Dump(); !strings.Contains(d, "as-web-4 { "+web.IP.String()+" }") {
		t.Fatalf("Wait returned but the set lacks %s:\n%s", web.IP, d)
	}
	// A peer's address on another host enters the peer set the same way.
	r.src.put(api.KindAddress, client.Name, client)
	if err := <-wait(client); err != nil {
		t.Fatal(err)
	}
	if d := r.nft.Dump(); !strings.Contains(d, "as-clients-4 { "+client.IP.String()+" }") {
		t.Fatalf("the peer set lacks %s:\n%s", client.IP, d)
	}
	// A pod no set lists: the wait ends as soon as the model has it.
	r.kernel.AddLink(other.Interface, "veth")
	r.src.put(api.KindAddress, other.Name, other)
	if err := <-wait(other); err != nil {
		t.Fatal(err)
	}
	if d := r.nft.Dump(); strings.Contains(d, other.IP.String()) {
		t.Errorf("%s (a pod no set lists) is in the table:\n%s", other.IP, d)
	}
	// Released: the element goes.
	r.src.del(api.KindAddress, web.Name)
	expect.Eventually(t, "released", within, func() error {
		if d := r.nft.Dump(); strings.Contains(d, web.IP.String()) {
			return fmt.Errorf("%s still in the table", web.IP)
		}
		return r.converged()
	})
	// A wait that ctx ends says what it waited for.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ghost := web
	ghost.Name = "ghost:eth0"
	if err := s.Wait(ctx, []api.Address{ghost}); err == nil || !strings.Contains(err.Error(), web.IP.String()) {
		t.Errorf("Wait with an ended ctx = %v; want an error naming %s", err, web.IP)
	}
	if n := s.Waiting(); n != 0 {
		t.Errorf("%d waits left", n)
	}
}

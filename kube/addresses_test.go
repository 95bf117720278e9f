package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

func podAddr(name, ip, host, ns, pod, uid string) api.Address {
	a := api.Address{Name: name, IP: netip.MustParseAddr(ip), Host: host,
		Attrs: map[string]string{api.AttrK8sNamespace: ns, api.AttrK8sPod: pod}}
	if uid != "" {
		a.Attrs[api.AttrK8sUID] = uid
	}
	return a
}

func TestWithAllocatedIPs(t *testing.T) {
	var idx PodAddresses
	for _, a := range []api.Address{
		podAddr("c1:eth0", "10.0.0.5", "n1", "x", "new", "u1"),
		podAddr("c1:eth0:1", "fd00::5", "n1", "x", "new", "u1"),
		podAddr("c2:eth0", "10.0.0.6", "n1", "x", "reported", ""),
		podAddr("c3:eth0", "10.0.0.7", "n2", "x", "elsewhere", ""),
		podAddr("c4:eth0", "10.0.0.8", "n1", "x", "recreated", "old-uid"),
		podAddr("c5:eth0", "10.0.0.9", "n1", "x", "deleting", ""),
		podAddr("c6:eth0", "10.0.0.10", "n1", "x", "done", ""),
		podAddr("c7:eth0", "10.0.0.11", "n1", "x", "unscheduled", ""),
		{Name: "plain", IP: netip.MustParseAddr("10.0.0.12"), Host: "n1"}, // not a pod's
	} {
		idx.Put(a)
	}
	if idx.Len() != 8 {
		t.Fatalf("index holds %d addresses, want the 8 pods' ones", idx.Len())
	}
	now := metav1.Now()
	mk := func(name, uid, node string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID(uid)}, Spec: corev1.PodSpec{NodeName: node}}
	}
	pods := []corev1.Pod{mk("new", "u1", "n1"), mk("reported", "", "n1"), mk("elsewhere", "", "n1"),
		mk("recreated", "new-uid", "n1"), mk("deleting", "", "n1"), mk("done", "", "n1"), mk("unscheduled", "", "")}
	pods[1].Status.PodIP, pods[1].Status.PodIPs = "10.0.0.99", []corev1.PodIP{{IP: "10.0.0.99"}}
	pods[4].DeletionTimestamp = &now
	pods[5].Status.Phase = corev1.PodSucceeded
	in := make([]corev1.Pod, len(pods))
	for i := range pods {
		in[i] = *pods[i].DeepCopy()
	}
	out := WithAllocatedIPs(pods, &idx)
	want := map[string][]string{
		"new":      {"10.0.0.5", "fd00::5"}, // both families, IPv4 first
		"reported": {"10.0.0.99"},           // the kubelet's word
	}
	for _, p := range out {
		var got []string
		for _, ip := range p.Status.PodIPs {
			got = append(got, ip.IP)
		}
		if !slices.Equal(got, want[p.Name]) {
			t.Errorf("pod %s: status IPs %v, want %v", p.Name, got, want[p.Name])
		}
		if len(got) > 0 && p.Status.PodIP != got[0] {
			t.Errorf("pod %s: status IP %q, want %q", p.Name, p.Status.PodIP, got[0])
		}
	}
	for i := range pods {
		if pods[i].Status.PodIP != in[i].Status.PodIP || len(pods[i].Status.PodIPs) != len(in[i].Status.PodIPs) {
			t.Errorf("input pod %s was modified", pods[i].Name)
		}
	}
	idx.Delete("c1:eth0")
	idx.Delete("c1:eth0:1")
	if got := idx.For(&out[0]); len(got) != 0 {
		t.Errorf("after the release: %v", got)
	}
}

// fakeAddressSource is romanad's snapshot and watch: Snapshot returns the
// current addresses at the current revision; Watch sends the events
// published after it and returns when the test breaks the stream.
type fakeAddressSource struct {
	mu        sync.Mutex
	rev       int64
	addrs     map[string]api.Address
	events    []api.Event
	snapshots int
	breakCh   chan struct{}
	wake      chan struct{}
}

func newFakeAddressSource() *fakeAddressSource {
	return &fakeAddressSource{addrs: map[string]api.Address{}, breakCh: make(chan struct{}), wake: make(chan struct{}, 1)}
}

func (f *fakeAddressSource) Snapshot(context.Context) (api.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshots++
	s := api.Snapshot{Revision: f.rev}
	for _, a := range f.addrs {
		s.Addresses = append(s.Addresses, a)
	}
	return s, nil
}

func (f *fakeAddressSource) Watch(ctx context.Context, rev int64, fn func(api.Event) error) error {
	for {
		f.mu.Lock()
		var todo []api.Event
		for _, ev := range f.events {
			if ev.Revision >= rev {
				todo = append(todo, ev)
			}
		}
		brk := f.breakCh
		f.mu.Unlock()
		for _, ev := range todo {
			if err := fn(ev); err != nil {
				return err
			}
			rev = ev.Revision + 1
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-brk:
			f.mu.Lock()
			f.breakCh = make(chan struct{})
			f.mu.Unlock()
			return errors.New("stream broken by the test")
		case <-f.wake:
		}
	}
}

// put and del publish one revision.
func (f *fakeAddressSource) put(a api.Address) {
	f.mu.Lock()
	f.rev++
	f.addrs[a.Name] = a
	obj, _ := json.Marshal(a)
	f.events = append(f.events, api.Event{Revision: f.rev, Type: api.EventPut, Kind: api.KindAddress, Name: a.Name, Object: obj, RevisionEnd: true})
	f.mu.Unlock()
	f.poke()
}

func (f *fakeAddressSource) del(name string) {
	f.mu.Lock()
	f.rev++
	delete(f.addrs, name)
	f.events = append(f.events, api.Event{Revision: f.rev, Type: api.EventDelete, Kind: api.KindAddress, Name: name, RevisionEnd: true})
	f.mu.Unlock()
	f.poke()
}

func (f *fakeAddressSource) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func TestAddressFollower(t *testing.T) {
	src := newFakeAddressSource()
	src.put(podAddr("c1:eth0", "10.0.0.5", "n1", "x", "a", ""))
	var mu sync.Mutex
	changes := 0
	f := &addressFollower{src: src, log: slog.New(slog.DiscardHandler), changed: func() { mu.Lock(); changes++; mu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.run(ctx) }()
	defer func() { cancel(); <-done }()

	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name}, Spec: corev1.PodSpec{NodeName: "n1"}}
	}
	has := func(name, ip string) func() error {
		return func() error {
			idx, ok := f.pods()
			if !ok {
				return errors.New("no snapshot read yet")
			}
			got := idx.For(pod(name))
			if ip == "" && len(got) == 0 || len(got) == 1 && got[0].String() == ip {
				return nil
			}
			return fmt.Errorf("pod %s has %v, want %q", name, got, ip)
		}
	}
	expect.Eventually(t, "the snapshot's address", 10*time.Second, has("a", "10.0.0.5"))
	src.put(podAddr("c2:eth0", "10.0.0.6", "n1", "x", "b", ""))
	expect.Eventually(t, "a watched allocation", 10*time.Second, has("b", "10.0.0.6"))
	src.del("c1:eth0")
	expect.Eventually(t, "a watched release", 10*time.Second, has("a", ""))
	src.put(api.Address{Name: "plain", IP: netip.MustParseAddr("10.0.0.7"), Host: "n1"})

	// A broken stream: a new snapshot, which has what changed meanwhile.
	src.mu.Lock()
	close(src.breakCh)
	src.addrs["c3:eth0"] = podAddr("c3:eth0", "10.0.0.8", "n1", "x", "c", "")
	src.rev++ // not published as an event: only the snapshot has it
	src.mu.Unlock()
	expect.Eventually(t, "the new snapshot after the break", 10*time.Second, has("c", "10.0.0.8"))
	src.mu.Lock()
	snaps := src.snapshots
	src.mu.Unlock()
	if snaps < 2 {
		t.Errorf("%d snapshots read, want a second one after the break", snaps)
	}
	mu.Lock()
	defer mu.Unlock()
	// The first snapshot, b's put, a's delete, the second snapshot; the
	// address of no pod changes nothing.
	if changes < 4 {
		t.Errorf("changed called %d times, want at least 4", changes)
	}
}

package sim_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/expect"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

func TestLab(t *testing.T) {
	simtest.Require(t, "ping")
	ctx := context.Background()
	lab := simtest.New(t)
	h1, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.7.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := lab.AddHost(ctx, "h2", netip.MustParsePrefix("192.168.7.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.AddHost(ctx, "h2", netip.MustParsePrefix("192.168.7.3/24")); err == nil {
		t.Fatal("adding h2 twice: no error")
	}
	// Hosts reach each other over the fabric bridge.
	if out, err := h1.Exec(ctx, "ping", "-c1", "-W2", "192.168.7.2"); err != nil {
		t.Fatalf("h1 -> h2: %v\n%s", err, out)
	}
	ep, err := lab.AddEndpoint(ctx, h2, "ep1", netip.MustParseAddr("10.2.0.5"), "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := ep.Exec(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, "10.2.0.5/32") {
		t.Fatalf("endpoint eth0: %v %s", err, out)
	}
	out, err = ep.Exec(ctx, "ip", "route", "show", "default")
	if err != nil || !strings.Contains(out, "default via 169.254.1.1 dev eth0 onlink") {
		t.Fatalf("endpoint default route: %v %q", err, out)
	}
	out, err = h2.Exec(ctx, "ip", "-o", "link", "show", "rv-ep1")
	if err != nil || !strings.Contains(out, "UP") {
		t.Fatalf("host side of the endpoint veth: %v %s", err, out)
	}
	// Do runs Go code in the namespace.
	var hostname string
	if err := h1.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		hostname = string(b)
		return err
	}); err != nil || strings.TrimSpace(hostname) != "0" {
		t.Fatalf("Do: read ip_forward in a new namespace: %q, %v", hostname, err)
	}

	names := []string{lab.Fabric.Name, h1.Name, h2.Name, ep.Name}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			t.Errorf("namespace %s survived Close", n)
		}
	}
	if _, err := lab.AddHost(ctx, "h3", netip.MustParsePrefix("192.168.7.3/24")); err == nil {
		t.Fatal("AddHost after Close: no error")
	}
}

func TestCleanupStale(t *testing.T) {
	simtest.Require(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("romt-st%d", os.Getpid())
	lab, err := sim.New(ctx, prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	if _, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.8.1/24")); err != nil {
		t.Fatal(err)
	}
	// A crash: the lab is never closed. A new run cleans up by prefix.
	if err := sim.CleanupStale(prefix); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{prefix + "-fabric", prefix + "-h1"} {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			t.Errorf("namespace %s survived CleanupStale", n)
		}
	}
	if err := sim.CleanupStale("bad/prefix"); err == nil {
		t.Error("CleanupStale with a bad prefix: no error")
	}
}

// TestDeleteRecorded: NewRecorded's list names every namespace before it
// exists, and DeleteRecorded deletes exactly those: a namespace with the
// same prefix that the lab never made survives.
func TestDeleteRecorded(t *testing.T) {
	simtest.Require(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("romt-dr%d", os.Getpid())
	var recorded []string
	lab, err := sim.NewRecorded(ctx, prefix, nil, func(ns string) error {
		if sim.Exists(ns) {
			t.Errorf("namespace %s recorded after it was created", ns)
		}
		recorded = append(recorded, ns)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	if _, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.9.1/24")); err != nil {
		t.Fatal(err)
	}
	foreign := prefix + "-notours"
	if out, err := exec.Command("ip", "netns", "add", foreign).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", foreign, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", foreign).Run() })
	if want := []string{prefix + "-fabric", prefix + "-h1"}; !slices.Equal(recorded, want) {
		t.Fatalf("recorded %v, want %v", recorded, want)
	}
	if err := sim.DeleteRecorded(prefix, []string{prefix + "-h1", "other-h1"}); err == nil || !sim.Exists(prefix+"-h1") {
		t.Errorf("DeleteRecorded with a name of another prefix: %v; want it refused, nothing deleted", err)
	}
	if err := sim.DeleteRecorded(prefix, recorded); err != nil {
		t.Fatal(err)
	}
	for _, n := range recorded {
		if sim.Exists(n) {
			t.Errorf("recorded namespace %s survived DeleteRecorded", n)
		}
	}
	if !sim.Exists(foreign) {
		t.Errorf("namespace %s, not the lab's, was deleted", foreign)
	}
	// A failing record stops the creation.
	if _, err := sim.NewRecorded(ctx, prefix+"x", nil, func(string) error { return fmt.Errorf("disk full") }); err == nil || sim.Exists(prefix+"x-fabric") {
		t.Errorf("NewRecorded with a failing record: %v", err)
	}
}

// TestCleanupAbandoned: young namespaces are kept; once old enough, idle
// ones are swept and one with a process running in it is kept.
func TestCleanupAbandoned(t *testing.T) {
	simtest.Require(t, "sleep")
	ctx := context.Background()
	prefix := fmt.Sprintf("romt-ab%d", os.Getpid())
	lab, err := sim.New(ctx, prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	idle, err := lab.AddNamespace(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	busy, err := lab.AddNamespace(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	sleeper := busy.Command(ctx, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	// `ip netns exec` may not have entered the namespace yet.
	expect.Poll(5*time.Second, func() error {
		if out, _ := exec.Command("ip", "netns", "pids", busy.Name).Output(); len(strings.TrimSpace(string(out))) == 0 {
			return errors.New("no process in the namespace yet")
		}
		return nil
	})
	exists := func(n *sim.Namespace) bool { _, err := os.Stat(n.Path); return err == nil }

	if err := sim.CleanupAbandoned(prefix, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*sim.Namespace{idle, busy, lab.Fabric} {
		if !exists(n) {
			t.Errorf("namespace %s younger than an hour was deleted", n.Name)
		}
	}
	if err := sim.CleanupAbandoned(prefix, 0); err != nil {
		t.Fatal(err)
	}
	if exists(idle) || exists(lab.Fabric) {
		t.Errorf("idle namespaces survived: %s %v, %s %v", idle.Name, exists(idle), lab.Fabric.Name, exists(lab.Fabric))
	}
	if !exists(busy) {
		t.Errorf("namespace %s with a running process was deleted", busy.Name)
	}
}

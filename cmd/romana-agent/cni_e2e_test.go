package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
	"github.com/romana/romana/cni"
	"github.com/romana/romana/cnirun"
	"github.com/romana/romana/expect"
)

// pluginDir returns a directory holding the romana-cni binary: $ROMANA_BIN
// when it has one (make test), otherwise a fresh go build.
func pluginDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("ROMANA_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "romana-cni")); err == nil {
			return d
		}
	}
	d := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(d, "romana-cni"), "github.com/romana/romana/cmd/romana-cni").CombinedOutput(); err != nil {
		t.Fatalf("go build romana-cni: %v\n%s", err, out)
	}
	return d
}

// TestAgentServesCNI: the real agent, in its host's namespace, serves the
// thin romana-cni binary on --cni-socket: ADD allocates as host:h1 on h1
// and wires an endpoint that reaches another host's endpoint of its
// tenant; an agent restart (socket gone and back) does not break CHECK or
// the next ADD; DEL releases.
func TestAgentServesCNI(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	for _, h := range []string{"h1", "h2"} {
		c.startAgent(h)
	}
	c.waitHealthy("h1", "h2")
	conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"romana-e2e","type":"romana-cni","agentSocket":%q,"tenant":"acme"}`, c.cniSock("h1"))
	rt, err := cnirun.New(c.hosts["h1"].Path, []string{pluginDir(t)}, t.TempDir(), conf)
	if err != nil {
		t.Fatal(err)
	}
	add := func(id string) (netip.Addr, string) {
		t.Helper()
		ns, err := c.lab.AddNamespace(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		r, err := rt.Add(ctx, id, ns.Path, "eth0", nil)
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil || len(res.IPs) != 1 {
			t.Fatalf("ADD %s result %v: %v", id, r, err)
		}
		ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		a, err := c.srv.Client.GetAddress(ctx, cni.AllocationName(id, "eth0"))
		if err != nil || a.IP != ip || a.Host != "h1" || a.Tenant != "acme" {
			t.Fatalf("romanad has %+v, %v for %s; the result says %s", a, err, id, ip)
		}
		// The new endpoint reaches acme's a2 on h2 (TCP echo).
		expect.Eventually(t, id+" reaches a2", wait, func() error {
			return ns.Do(func() error {
				conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(c.eps["a2"].IP, echoPort).String(), time.Second)
				if err == nil {
					conn.Close()
				}
				return err
			})
		})
		return ip, ns.Path
	}
	_, p1 := add("cnie1")

	c.stopAgent("h1")
	if _, err := os.Stat(c.cniSock("h1")); !os.IsNotExist(err) {
		t.Errorf("socket after the agent stopped: %v", err)
	}
	c.startAgent("h1")
	c.waitHealthy("h1")
	if err := rt.Check(ctx, "cnie1", p1, "eth0", nil); err != nil {
		t.Errorf("CHECK after the agent restart: %v", err)
	}
	_, p2 := add("cnie2")
	for id, p := range map[string]string{"cnie1": p1, "cnie2": p2} {
		if err := rt.Del(ctx, id, p, "eth0", nil); err != nil {
			t.Errorf("DEL %s: %v", id, err)
		}
		if _, err := c.srv.Client.GetAddress(ctx, cni.AllocationName(id, "eth0")); !api.IsNotFound(err) {
			t.Errorf("romanad still has %s after DEL: %v", id, err)
		}
	}
}

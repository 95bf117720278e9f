package cni

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/pki"
)

// TestLibcniCredential: the plugin acts as the cni:HOST identity of its
// credential file. With no "server" and no "host" in the network config the
// credential names both, and the address is allocated on that host; romanad
// refuses that identity on any other host. A credential that does not fit
// the config (another host, a host:NAME identity, readable by others,
// missing) is refused before any request leaves the host.
func TestLibcniCredential(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	t.Run("credential names the server and the host", func(t *testing.T) {
		b := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"romana","plugins":[{"type":"romana-cni","credential":%q,"tenant":"acme","segment":"web"}]}`, e.cred)
		list, err := libcni.ConfListFromBytes([]byte(b))
		if err != nil {
			t.Fatal(err)
		}
		c, cPath := e.container(t, "cred")
		rt := &libcni.RuntimeConf{ContainerID: "cred1", NetNS: cPath, IfName: "eth0"}
		res, err := e.add(t, e.cfg, list, rt)
		if err != nil {
			t.Fatalf("ADD with the credential's server and host: %v", err)
		}
		ip := checkResult(t, res, cPath, "cred1:eth0")
		a, err := e.rd.GetAddress(ctx, "cred1:eth0")
		if err != nil || a.Host != testHost || a.IP != ip || a.Tenant != "acme" || a.Segment != "web" {
			t.Fatalf("romanad has %+v, %v for cred1:eth0; want host %s, ip %s", a, err, testHost, ip)
		}
		if err := ping(c, Gateway.String()); err != nil {
			t.Error(err)
		}
		if err := e.cfg.DelNetworkList(ctx, list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		e.assertGone(t, "cred1", "eth0", c)
	})

	t.Run("romanad confines cni:h1 to h1", func(t *testing.T) {
		if _, err := e.rd.AddHost(ctx, api.Host{Name: "h2", IP: netip.MustParseAddr("192.168.77.2")}); err != nil {
			t.Fatal(err)
		}
		cl := e.romanad.ClientAs(t, pki.CNI(testHost))
		_, err := cl.Allocate(ctx, api.AddressRequest{Name: "other:eth0", Host: "h2", Tenant: "acme", Segment: "web"})
		if api.ReasonOf(err) != api.ReasonForbidden {
			t.Fatalf("cni:h1 allocating on h2: %v, want 403 Forbidden", err)
		}
		if _, err := e.rd.GetAddress(ctx, "other:eth0"); !api.IsNotFound(err) {
			t.Fatalf("romanad has other:eth0 after the refusal: %v", err)
		}
	})

	// A listener on the controller that counts connections: the server of
	// the configs below, so that a refusal "before any request" is checked,
	// not assumed.
	ln, err := e.ctl.Listen("tcp", netip.AddrPortFrom(controllerAddr.Addr(), 9700).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	counted := "https://" + ln.Addr().String()

	dir := t.TempDir()
	h1, err := os.ReadFile(e.cred)
	if err != nil {
		t.Fatal(err)
	}
	readable := filepath.Join(dir, "readable.conf")
	if err := os.WriteFile(readable, h1, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(readable, 0o644); err != nil {
		t.Fatal(err)
	}
	agentCred := e.romanad.WriteCredential(t, pki.Host(testHost), dir)
	missing := filepath.Join(dir, "missing.conf")
	conf := func(cred, host string) *libcni.NetworkConfigList {
		b := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"romana","plugins":[{"type":"romana-cni","server":%q,"credential":%q,"host":%q,"tenant":"acme"}]}`,
			counted, cred, host)
		l, err := libcni.ConfListFromBytes([]byte(b))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for i, tt := range []struct {
		name string
		list *libcni.NetworkConfigList
		msg  string
	}{
		{"another host", conf(e.cred, "h2"), fmt.Sprintf("credential %s is for host h1, not h2", e.cred)},
		{"readable by others", conf(readable, testHost), fmt.Sprintf("credential %s: mode 0644 lets other users read the private key; run chmod 600 %s", readable, readable)},
		{"an agent's credential", conf(agentCred, testHost), fmt.Sprintf(`credential %s: identity "host:h1" is not a CNI plugin's (cni:HOST)`, agentCred)},
		{"missing", conf(missing, testHost), fmt.Sprintf("credential %s: stat %s: no such file or directory (romana-agent writes it once the host has joined)", missing, missing)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, cPath := e.container(t, fmt.Sprintf("r%d", i))
			rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("refused%d", i), NetNS: cPath, IfName: "eth0"}
			_, err := e.cfg.AddNetworkList(ctx, tt.list, rt)
			cniError(t, err, types.ErrInvalidNetworkConfig, "invalid network config: "+tt.msg)
			cniError(t, e.cfg.DelNetworkList(ctx, tt.list, rt), types.ErrInvalidNetworkConfig, tt.msg)
			if n := accepted.Load(); n != 0 {
				t.Fatalf("the plugin connected to romanad's address %d time(s) with a credential it must refuse", n)
			}
			e.assertGone(t, rt.ContainerID, "eth0", c)
		})
	}
	// The counting listener does answer: a connection to it is counted.
	conn, err := dialIn(e.ctl.Namespace)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	expect.Eventually(t, "the counting listener counts", 30*time.Second, func() error {
		if n := accepted.Load(); n != 1 {
			return fmt.Errorf("%d connections accepted", n)
		}
		return nil
	})
}

package demo

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/romana/romana/client"
	"github.com/romana/romana/sim"
)

// controlPlane is romanad as the demos run it: in a controller namespace on
// the simulated underlay, serving mutual TLS at URL to the agents and its
// unix socket (admin, root only) to the demo itself.
type controlPlane struct {
	proc *proc
	cli  *client.Client // admin, over the unix socket
	sock string
	URL  string // https://ADDR:9600
	dir  string
}

// startControlPlane starts romanad inside ctl, listening on addr:9600, with
// its CA, admin credential and embedded etcd under dir.
func startControlPlane(ctx context.Context, dir, binDir string, ctl *sim.Namespace, addr netip.Addr) (*controlPlane, error) {
	cp := &controlPlane{sock: filepath.Join(dir, "romanad.sock"), dir: dir,
		URL: "https://" + netip.AddrPortFrom(addr, 9600).String()}
	var err error
	cp.proc, err = startProc("romanad", dir, ctl.Name, filepath.Join(binDir, "romanad"),
		"--listen", netip.AddrPortFrom(addr, 9600).String(), "--advertise", addr.String(),
		"--socket", cp.sock, "--data-dir", filepath.Join(dir, "etcd"), "--pki-dir", filepath.Join(dir, "pki"),
		"--admin-config", filepath.Join(dir, "admin.conf"))
	if err != nil {
		return nil, err
	}
	if cp.cli, err = client.New("unix://" + cp.sock); err != nil {
		return cp, err
	}
	if err := cp.cli.WaitHealthy(ctx, 30*time.Second); err != nil {
		return cp, fmt.Errorf("%w\nromanad log:\n%s", err, cp.proc.tail(20))
	}
	return cp, nil
}

// hostFiles are where a demo host's agent keeps its credentials and serves
// the CNI plugin (each host its own socket: the simulated hosts share one
// filesystem).
func (cp *controlPlane) hostFiles(host string) (cred, cni, sock string) {
	d := filepath.Join(cp.dir, "hosts", host)
	return filepath.Join(d, "host.conf"), filepath.Join(d, "cni.conf"), filepath.Join(d, "cni.sock")
}

// joinArgs creates a single-use join token for host (as `romana host add`
// prints it) and returns the agent's arguments and environment to join with it.
func (cp *controlPlane) joinArgs(ctx context.Context, host string) (args, env []string, token string, err error) {
	tok, err := cp.cli.CreateToken(ctx, host, "10m")
	if err != nil {
		return nil, nil, "", fmt.Errorf("join token for %s: %w", host, err)
	}
	cred, cni, sock := cp.hostFiles(host)
	args = []string{"--host", host, "--server", cp.URL, "--config", cred, "--cni-config", cni, "--cni-socket", sock}
	// The token goes in the environment, not argv, where ps would show it.
	return args, []string{"ROMANA_JOIN_TOKEN=" + tok.Token}, tok.Token, nil
}

// cniConf is the CNI network configuration for host: the socket its
// agent serves (the plugin holds no credential).
func (cp *controlPlane) cniConf(host string) []byte {
	_, _, sock := cp.hostFiles(host)
	return fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"romana-demo","type":"romana-cni","agentSocket":%q}`, sock)
}

// waitJoined waits until every host's agent has joined and serves its CNI
// socket, or an agent exits.
func (cp *controlPlane) waitJoined(ctx context.Context, hosts []string, agents []*proc) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, h := range hosts {
		_, _, sock := cp.hostFiles(h)
		for {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			for _, a := range agents {
				if a.exited() {
					return fmt.Errorf("%s exited before joining:\n%s", a.name, a.tail(20))
				}
			}
			select {
			case <-ctx.Done():
				return errors.Join(fmt.Errorf("host %s: no CNI socket at %s yet", h, sock), ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

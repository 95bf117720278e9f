package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/cni/forward"
)

// maxRequest bounds a forwarded request (a network config with a
// prevResult is a few kB).
const maxRequest = 1 << 20

// Server serves the agent's CNI socket: each connection carries one
// forward.Request from the romana-cni binary, run by Plugin, and gets one
// forward.Response. Only root may connect: the socket is 0600 in a
// directory that is not writable by others, and the peer's uid (SO_PEERCRED)
// must be 0.
type Server struct {
	Plugin *Plugin
	Log    *slog.Logger
	// Do runs a request's work; nil runs it directly. The tests pass a
	// simulated host's namespace (ns.NetNS.Do) since they run the server
	// in their own process.
	Do func(func() error) error

	wg sync.WaitGroup
}

// Listen creates the socket at path, root's and 0600, in a directory it
// creates 0700 if missing (an existing one must be the caller's and not
// writable by group or others). A stale socket is replaced; one another process still serves
// is an error. The socket appears at path only once its mode is 0600.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("CNI socket directory %s: %w", dir, err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("CNI socket directory %s: %w", dir, err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("CNI socket directory %s: owned by uid %d, not by this process's uid %d, who could replace the socket", dir, sys.Uid, os.Geteuid())
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("CNI socket directory %s: mode %04o lets others replace the socket; want 0700 (or at least not group/other-writable)", dir, st.Mode().Perm())
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("CNI socket %s: exists and is not a socket (%v); remove it or choose another --cni-socket", path, st.Mode())
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("CNI socket %s: another process serves it (another romana-agent? give each its own --cni-socket)", path)
	}
	// Bind in a private directory, set the mode, then rename into place:
	// the socket is never reachable with a wider mode.
	tmp, err := os.MkdirTemp(dir, ".cni-sock-")
	if err != nil {
		return nil, fmt.Errorf("CNI socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(tmp, "s"), Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("CNI socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	err = os.Chmod(filepath.Join(tmp, "s"), 0o600)
	if err == nil {
		err = os.Rename(filepath.Join(tmp, "s"), path)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("CNI socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve answers connections on ln (from Listen(path)) until ctx ends, then
// closes ln, removes the socket at path and waits for the requests in
// flight.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener, path string) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	s.Log.Info("serving CNI requests", "socket", path)
	var err error
	for {
		var conn *net.UnixConn
		conn, err = ln.AcceptUnix()
		if err != nil {
			break
		}
		s.wg.Go(func() { s.serveConn(ctx, conn) })
	}
	ln.Close()
	RemoveSocket(path)
	s.wg.Wait()
	s.Plugin.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("serve CNI socket: %w", err)
}

// RemoveSocket removes the socket file at path if it is a socket.
func RemoveSocket(path string) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
}

func (s *Server) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	if err := peerIsRoot(conn); err != nil {
		s.Log.Warn("CNI socket: refused a connection", "err", err)
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(io.LimitReader(conn, maxRequest+1))
	if err == nil && len(b) > maxRequest {
		err = fmt.Errorf("request over %d bytes", maxRequest)
	}
	var req forward.Request
	if err == nil {
		err = json.Unmarshal(b, &req)
	}
	if err != nil {
		s.Log.Warn("CNI socket: bad request", "err", err)
		return
	}
	// The request runs to its end even when the agent is stopping, so that
	// an ADD either completes or is undone (Plugin.Timeout bounds it).
	ctx = context.WithoutCancel(ctx)
	var resp forward.Response
	run := func() error {
		resp = s.Plugin.Handle(ctx, req.Env, req.Stdin)
		return nil
	}
	if s.Do != nil {
		err = s.Do(run)
	} else {
		err = run()
	}
	if err != nil {
		resp = errorResponse(types.NewError(types.ErrInternal, "romana-agent: enter the host's network namespace: "+err.Error(), ""))
	}
	out, err := json.Marshal(resp)
	if err == nil {
		_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err = conn.Write(out)
	}
	if err != nil {
		s.Log.Warn("CNI socket: answer", "command", req.Env["CNI_COMMAND"], "container", req.Env["CNI_CONTAINERID"], "err", err)
	}
}

// peerIsRoot checks the connecting process's uid (SO_PEERCRED).
func peerIsRoot(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("peer credentials: %w", credErr)
	}
	if cred.Uid != 0 {
		return fmt.Errorf("peer pid %d uid %d is not root", cred.Pid, cred.Uid)
	}
	return nil
}

package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// ProbePort is the TCP port every demo endpoint listens on.
const ProbePort = 8080

// listenIn opens a TCP listener inside the network namespace at nsPath. The
// socket stays in that namespace after the calling thread switches back.
func listenIn(nsPath string, addr netip.AddrPort) (net.Listener, error) {
	var l net.Listener
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, nsPath, err)
	}
	return l, nil
}

// serve answers every connection with one byte, so a probe proves a full
// round trip and not only a SYN/SYN-ACK.
func serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write([]byte{'r'})
		}()
	}
}

// dialIn connects from inside the namespace at nsPath to addr and reads the
// server's byte. It returns nil only for a complete exchange.
func dialIn(nsPath string, addr netip.AddrPort, timeout time.Duration) error {
	var c net.Conn
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("read from %s: %w", addr, err)
	}
	return nil
}

// pingIn sends one ICMP echo from the named namespace and reports whether a
// reply came back within timeout.
func pingIn(ctx context.Context, nsName string, dst netip.Addr, timeout time.Duration) bool {
	secs := int(timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nsName, "ping", "-n", "-q", "-c", "1", "-W", strconv.Itoa(secs), dst.String())
	return cmd.Run() == nil
}

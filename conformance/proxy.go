package conformance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// EgressSelectorConfig is a kube-apiserver --egress-selector-config-file
// that sends the "cluster" egress (its connections to kubelets: exec,
// logs, port-forward) through an HTTP CONNECT proxy on the unix socket
// sock, and everything else (etcd, its own loopback) directly.
func EgressSelectorConfig(sock string) string {
	return fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, sock)
}

// DialFunc connects to addr (host:port) from somewhere: for a node, from
// inside its host's network namespace.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// KubeletProxy is an HTTP CONNECT proxy on a unix socket for the
// apiserver's "cluster" egress. A node's kubelet listens on 127.0.0.1 in
// its host's network namespace, which the apiserver (in the test's
// namespace) cannot reach; the proxy maps CONNECT NODE:PORT, where NODE is
// a node's name or address (what the apiserver picks from the Node's
// addresses), to 127.0.0.1:PORT dialed inside that node's namespace. No
// address or route is added anywhere. Targets that are no node are
// refused (502).
type KubeletProxy struct {
	log *slog.Logger
	ln  net.Listener

	mu    sync.Mutex
	nodes map[string]DialFunc // by name and by address
	conns sync.WaitGroup
}

// ListenKubeletProxy listens on the unix socket sock and serves until
// Close.
func ListenKubeletProxy(sock string, log *slog.Logger) (*KubeletProxy, error) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on kubelet proxy socket %s: %w", sock, err)
	}
	p := &KubeletProxy{log: log, ln: ln, nodes: map[string]DialFunc{}}
	go p.serve()
	return p, nil
}

// AddNode makes CONNECT to any of names (a node's name, its addresses)
// dial 127.0.0.1 with dial.
func (p *KubeletProxy) AddNode(dial DialFunc, names ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range names {
		p.nodes[n] = dial
	}
}

// Close stops listening and waits for the open tunnels to end.
func (p *KubeletProxy) Close() error {
	err := p.ln.Close()
	p.conns.Wait()
	return err
}

func (p *KubeletProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		go func() {
			defer p.conns.Done()
			p.tunnel(c)
		}()
	}
}

// tunnel answers one CONNECT and copies bytes both ways until either side
// closes.
func (p *KubeletProxy) tunnel(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	req, err := http.ReadRequest(br)
	if err != nil {
		p.log.Warn("kubelet proxy: read request", "err", err)
		return
	}
	c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		fmt.Fprintf(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	host, port, err := net.SplitHostPort(req.Host)
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
		return
	}
	p.mu.Lock()
	dial := p.nodes[host]
	p.mu.Unlock()
	if dial == nil {
		p.log.Warn("kubelet proxy: CONNECT to no node", "target", req.Host)
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := dial(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
	cancel()
	if err != nil {
		p.log.Warn("kubelet proxy: dial", "target", req.Host, "err", err)
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, br) // what the client sent after the request is buffered in br
		if tc, ok := up.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(c, up)
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	<-done
}

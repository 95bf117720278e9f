package conformance

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubeletProxy: CONNECT to a registered node's name or address reaches
// 127.0.0.1:PORT through its dial function and carries bytes both ways;
// CONNECT to anything else is refused with 502 and dials nothing.
func TestKubeletProxy(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	_, port, _ := net.SplitHostPort(echo.Addr().String())

	p, err := ListenKubeletProxy(filepath.Join(t.TempDir(), "p.sock"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var dialed []string
	p.AddNode(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, addr)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}, "h1", "192.168.77.1")

	connect := func(target string) (*http.Response, net.Conn, *bufio.Reader) {
		c, err := net.Dial("unix", p.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp, c, br
	}
	for _, target := range []string{"h1:" + port, "192.168.77.1:" + port} {
		resp, c, br := connect(target)
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %s", target, resp.Status)
		}
		io.WriteString(c, "ping\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Errorf("through %s: %q, %v", target, line, err)
		}
		c.Close()
	}
	resp, c, _ := connect("10.1.2.3:" + port)
	c.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("CONNECT to no node: %s", resp.Status)
	}
	if want := "127.0.0.1:" + port; strings.Join(dialed, ",") != want+","+want {
		t.Errorf("dialed %v", dialed)
	}
}

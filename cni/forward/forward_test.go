package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// plugin returns a Plugin for one invocation with env and stdin, writing
// to out; links are the host's links.
func plugin(env map[string]string, stdin string, out *bytes.Buffer, links ...string) *Plugin {
	return &Plugin{
		Getenv: func(k string) string { return env[k] },
		Environ: func() []string {
			var kv []string
			for k, v := range env {
				kv = append(kv, k+"="+v)
			}
			return kv
		},
		Stdin: strings.NewReader(stdin), Stdout: out,
		Wait: 5 * time.Second, Timeout: 10 * time.Second,
		LinkExists: func(name string) bool {
			for _, l := range links {
				if l == name {
					return true
				}
			}
			return false
		},
	}
}

// serveOnce answers one connection on sock with resp and returns the
// request it got.
func serveOnce(t *testing.T, ln net.Listener, resp Response) <-chan Request {
	t.Helper()
	got := make(chan Request, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		defer conn.Close()
		b, _ := io.ReadAll(conn)
		var req Request
		_ = json.Unmarshal(b, &req)
		out, _ := json.Marshal(resp)
		_, _ = conn.Write(out)
		got <- req
	}()
	return got
}

func decodeError(t *testing.T, out []byte) Error {
	t.Helper()
	var e Error
	if err := json.Unmarshal(out, &e); err != nil {
		t.Fatalf("output %q is not a CNI error: %v", out, err)
	}
	return e
}

func TestVersionIsLocal(t *testing.T) {
	var out bytes.Buffer
	p := plugin(map[string]string{"CNI_COMMAND": "VERSION"}, "", &out)
	if code := p.Run(context.Background()); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.CNIVersion != "1.1.0" || strings.Join(v.SupportedVersions, ",") != "0.4.0,1.0.0,1.1.0" {
		t.Fatalf("VERSION printed %q (%v)", out.String(), err)
	}
}

// TestForward: the CNI_* variables (and nothing else) and stdin reach the
// agent; its output is printed as is, and a failed answer exits 1.
func TestForward(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cni.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conf := `{"cniVersion":"1.1.0","name":"n","agentSocket":"` + sock + `"}`
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "PATH": "/bin", "ROMANA_CNI_FAIL_AT": "after-veth"}
	got := serveOnce(t, ln, Response{Output: json.RawMessage(`{"cniVersion":"1.1.0"}` + "\n")})
	var out bytes.Buffer
	if code := plugin(env, conf, &out).Run(context.Background()); code != 0 || out.String() != `{"cniVersion":"1.1.0"}`+"\n" {
		t.Fatalf("exit %d, printed %q", code, out.String())
	}
	req := <-got
	if len(req.Env) != 3 || req.Env["CNI_COMMAND"] != "ADD" || req.Env["CNI_CONTAINERID"] != "c1" || req.Env["CNI_IFNAME"] != "eth0" || string(req.Stdin) != conf {
		t.Fatalf("agent got %+v", req)
	}

	fail := Response{Failed: true, Output: json.RawMessage(`{"code":7,"msg":"bad"}`)}
	serveOnce(t, ln, fail)
	out.Reset()
	if code := plugin(env, conf, &out).Run(context.Background()); code != 1 || out.String() != string(fail.Output)+"\n" {
		t.Fatalf("exit %d, printed %q; want 1 and the agent's error", code, out.String())
	}
}

// TestRetryUntilAgentIsBack: with the socket missing (the agent
// restarting) the plugin keeps trying and gets its answer once the agent
// listens again.
func TestRetryUntilAgentIsBack(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cni.sock")
	conf := `{"cniVersion":"1.1.0","name":"n","agentSocket":"` + sock + `"}`
	var out bytes.Buffer
	p := plugin(map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}, conf, &out, VethName("c1:eth0"))
	p.Wait = time.Minute
	failed := make(chan error, 100)
	p.failedDial = func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	code := make(chan int, 1)
	go func() { code <- p.Run(context.Background()) }()
	if err := <-failed; err == nil {
		t.Fatal("no failed attempt reported")
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveOnce(t, ln, Response{})
	if c := <-code; c != 0 || out.Len() != 0 {
		t.Fatalf("exit %d, printed %q", c, out.String())
	}
}

// TestAgentDown: after Wait the plugin fails with code 11 naming the
// socket; STATUS fails at once with 50; a DEL whose host veth does not
// exist succeeds, one whose veth exists fails.
func TestAgentDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cni.sock")
	conf := `{"cniVersion":"1.1.0","name":"n","agentSocket":"` + sock + `"}`
	for _, tt := range []struct {
		cmd   string
		links []string
		code  uint // 0: success
		msg   string
	}{
		{"ADD", nil, ErrTryAgainLater, "romana-agent at " + sock + ": no answer within 100ms: connect: no such file or directory (is romana-agent running on this host?"},
		{"CHECK", nil, ErrTryAgainLater, "romana-agent at " + sock},
		{"GC", nil, ErrTryAgainLater, "romana-agent at " + sock},
		{"STATUS", nil, ErrPluginNotAvailable, "romana-agent at " + sock + ": cannot connect"},
		{"DEL", nil, 0, ""},
		{"DEL", []string{VethName("c1:eth0")}, ErrTryAgainLater, "romana-agent at " + sock},
	} {
		t.Run(tt.cmd, func(t *testing.T) {
			var out bytes.Buffer
			p := plugin(map[string]string{"CNI_COMMAND": tt.cmd, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}, conf, &out, tt.links...)
			p.Wait = 100 * time.Millisecond
			attempts := 0
			p.failedDial = func(error) { attempts++ }
			c := p.Run(context.Background())
			if tt.code == 0 {
				if c != 0 || out.Len() != 0 {
					t.Fatalf("exit %d, printed %q; want success", c, out.String())
				}
				return
			}
			e := decodeError(t, out.Bytes())
			if c != 1 || e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("exit %d, error %+v; want code %d containing %q", c, e, tt.code, tt.msg)
			}
			if tt.cmd == "STATUS" && attempts != 1 {
				t.Errorf("STATUS tried %d times, want once", attempts)
			}
			if tt.cmd == "ADD" && attempts < 2 {
				t.Errorf("ADD tried %d times, want retries", attempts)
			}
		})
	}
}

func TestBadStdin(t *testing.T) {
	var out bytes.Buffer
	c := plugin(map[string]string{"CNI_COMMAND": "ADD"}, `{"name":`, &out).Run(context.Background())
	if e := decodeError(t, out.Bytes()); c != 1 || e.Code != ErrDecodingFailure {
		t.Fatalf("exit %d, error %+v", c, e)
	}
}

// TestLinkExists asks the test's own network namespace (it only reads):
// lo is always there, and a name no one uses is not.
func TestLinkExists(t *testing.T) {
	if !linkExists("lo") {
		t.Error("linkExists(lo) = false")
	}
	if linkExists("romtnolink0") {
		t.Error("linkExists(romtnolink0) = true")
	}
	if linkExists("a-name-far-too-long-for-a-link") {
		t.Error("linkExists(a name over IFNAMSIZ) = true")
	}
}

// TestInterruptedOnlyWhileWaiting: the plugin asks for the stop signals
// only once it has to wait for the agent (installing handlers costs every
// run a thread), and a stop then ends the wait with an error naming it.
func TestInterruptedOnlyWhileWaiting(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cni.sock")
	conf := `{"cniVersion":"1.1.0","name":"n","agentSocket":"` + sock + `"}`
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
	calls := 0
	stopped := func(ctx context.Context) (context.Context, context.CancelFunc) {
		calls++
		ctx, cancel := context.WithCancel(ctx)
		cancel() // a SIGTERM at once
		return ctx, cancel
	}

	var out bytes.Buffer
	p := plugin(env, conf, &out)
	p.Wait = time.Minute
	p.Interrupted = stopped
	if c := p.Run(context.Background()); c != 1 || calls != 1 {
		t.Fatalf("agent down: exit %d, Interrupted called %d times; want 1 and once", c, calls)
	}
	if e := decodeError(t, out.Bytes()); e.Code != ErrTryAgainLater || !strings.Contains(e.Msg, "context canceled") {
		t.Fatalf("agent down, stopped while waiting: error %+v; want code 11 naming the cancellation", e)
	}

	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveOnce(t, ln, Response{Output: json.RawMessage(`{"cniVersion":"1.1.0"}`)})
	calls = 0
	out.Reset()
	p = plugin(env, conf, &out)
	p.Interrupted = stopped
	if c := p.Run(context.Background()); c != 0 || calls != 0 {
		t.Fatalf("agent up: exit %d (%s), Interrupted called %d times; want 0 and never", c, out.String(), calls)
	}
}

// Package forward is the whole of the romana-cni plugin binary: it forwards
// one CNI invocation (CNI_COMMAND, the other CNI_* variables and the
// network configuration) over a unix socket to the host's romana-agent and
// writes the agent's answer, a result or a CNI error, as the CNI spec
// wants it. The agent allocates, creates the veth and routes (package cni).
//
// It imports the standard library only, and of it not even package net
// (see unix.go), no TLS and no CNI library, so that the binary is small,
// static and starts in a few milliseconds.
// It also holds the wire format, which the agent's server shares.
package forward

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is the agent's CNI socket when the network configuration
// names none ("agentSocket"). Its directory is 0700 and the socket 0600,
// both root's.
const DefaultSocket = "/run/romana-agent/cni.sock"

// Versions are the CNI spec versions the plugin answers; Versions[len-1]
// is the one VERSION reports as its own.
var Versions = []string{"0.4.0", "1.0.0", "1.1.0"}

// CNI error codes the plugin itself returns (the CNI spec's numbers).
const (
	ErrInvalidEnvironmentVariables = 4
	ErrIOFailure                   = 5
	ErrDecodingFailure             = 6
	ErrTryAgainLater               = 11
	ErrPluginNotAvailable          = 50
)

// Request is one invocation as the plugin sends it: the CNI_* environment
// (CNI_COMMAND included) and stdin.
type Request struct {
	Env   map[string]string `json:"env"`
	Stdin []byte            `json:"stdin"`
}

// Response is the agent's answer: Output is what the plugin writes to
// stdout (a result, or a CNI error when Failed; JSON, ended with a newline
// by the plugin), and the plugin exits 1 when Failed.
type Response struct {
	Failed bool            `json:"failed,omitempty"`
	Output json.RawMessage `json:"output,omitempty"`
}

// Error is a CNI error as the spec prints it.
type Error struct {
	CNIVersion string `json:"cniVersion,omitempty"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return fmt.Sprintf("%s; %s", e.Msg, e.Details)
	}
	return e.Msg
}

// Plugin is one run of the plugin binary.
type Plugin struct {
	Getenv  func(string) string
	Environ func() []string
	Stdin   io.Reader
	Stdout  io.Writer
	// Wait bounds how long a plugin keeps trying to reach an agent whose
	// socket is missing or refuses (an agent restarting): ADD, DEL, CHECK
	// and GC only; STATUS and VERSION never wait.
	Wait time.Duration
	// Timeout bounds a whole exchange with the agent once connected.
	Timeout time.Duration
	// LinkExists reports whether the plugin's network namespace (the
	// host's) has a link of that name; DEL uses it when the agent is down.
	LinkExists func(name string) bool
	// Interrupted, when set, returns a context that ends when the
	// process is asked to stop (SIGINT, SIGTERM), and its stop function.
	// The plugin calls it only once it has to wait for the agent (a
	// failed connection): installing signal handlers starts a thread and
	// cost about 0.3 ms of every run; a runtime's signal during the
	// exchange itself ends the process as it ends any plugin.
	Interrupted func(context.Context) (context.Context, context.CancelFunc)

	// failedDial, when set (tests), is called after each failed connection
	// attempt.
	failedDial func(error)
}

// New returns a Plugin wired to the process.
func New() *Plugin {
	return &Plugin{
		Getenv: os.Getenv, Environ: os.Environ, Stdin: os.Stdin, Stdout: os.Stdout,
		Wait: 5 * time.Second, Timeout: 2 * time.Minute,
		LinkExists: linkExists,
		Interrupted: func(ctx context.Context) (context.Context, context.CancelFunc) {
			return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		},
	}
}

// Run handles one invocation and returns the process's exit code: 0, or 1
// after writing a CNI error to stdout.
func (p *Plugin) Run(ctx context.Context) int {
	out, err := p.run(ctx)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: 999, Msg: err.Error()}
		}
		b, _ := json.MarshalIndent(e, "", "    ")
		_, _ = p.Stdout.Write(append(b, '\n'))
		return 1
	}
	if len(out.Output) > 0 {
		if out.Output[len(out.Output)-1] != '\n' {
			out.Output = append(out.Output, '\n')
		}
		if _, err := p.Stdout.Write(out.Output); err != nil {
			return 1
		}
	}
	if out.Failed {
		return 1
	}
	return 0
}

func (p *Plugin) run(ctx context.Context) (Response, error) {
	cmd := p.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		b, err := json.Marshal(struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}{Versions[len(Versions)-1], Versions})
		return Response{Output: append(b, '\n')}, err
	}
	stdin, err := io.ReadAll(p.Stdin)
	if err != nil {
		return Response{}, &Error{Code: ErrIOFailure, Msg: "read stdin: " + err.Error()}
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Socket     string `json:"agentSocket"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return Response{}, &Error{Code: ErrDecodingFailure, Msg: "decode network config", Details: err.Error()}
	}
	sock := conf.Socket
	if sock == "" {
		sock = DefaultSocket
	}
	req := Request{Env: map[string]string{}, Stdin: stdin}
	for _, kv := range p.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "CNI_") {
			req.Env[k] = v
		}
	}
	wait := p.Wait
	if cmd == "STATUS" {
		wait = 0
	}
	resp, err := p.exchange(ctx, sock, wait, req)
	var down *agentDown
	if errors.As(err, &down) && cmd == "DEL" && !p.attached(req.Env) {
		// Nothing of this attachment is on the host: a DEL after an ADD that
		// never reached the agent (a runtime cleaning up a failed sandbox).
		return Response{}, nil
	}
	if err != nil {
		code := uint(ErrTryAgainLater)
		if cmd == "STATUS" {
			code = ErrPluginNotAvailable
		}
		return Response{}, &Error{CNIVersion: conf.CNIVersion, Code: code, Msg: err.Error()}
	}
	return resp, nil
}

// agentDown is a failure to connect to the agent at all.
type agentDown struct{ err error }

func (e *agentDown) Error() string { return e.err.Error() }
func (e *agentDown) Unwrap() error { return e.err }

// exchange sends req to the agent at sock, retrying the connection for up
// to wait while the socket is missing or refuses, and returns its answer.
func (p *Plugin) exchange(ctx context.Context, sock string, wait time.Duration, req Request) (Response, error) {
	deadline := time.Now().Add(wait)
	interrupted := p.Interrupted
	var conn *unixConn
	for {
		var err error
		conn, err = dialUnix(sock)
		if err == nil {
			break
		}
		if p.failedDial != nil {
			p.failedDial(err)
		}
		retry := errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
		if !retry || !time.Now().Before(deadline) {
			what := "cannot connect"
			if retry && wait > 0 {
				what = fmt.Sprintf("no answer within %s", wait)
			}
			return Response{}, &agentDown{fmt.Errorf("romana-agent at %s: %s: %w (is romana-agent running on this host? the network config's \"agentSocket\" must be its --cni-socket)", sock, what, err)}
		}
		if interrupted != nil { // the first wait
			var stop context.CancelFunc
			ctx, stop = interrupted(ctx)
			defer stop()
			interrupted = nil
		}
		select {
		case <-ctx.Done():
			return Response{}, &agentDown{fmt.Errorf("romana-agent at %s: %w", sock, ctx.Err())}
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(p.Timeout))
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	if _, err := conn.Write(b); err != nil {
		return Response{}, fmt.Errorf("romana-agent at %s: send request: %w", sock, err)
	}
	if err := conn.CloseWrite(); err != nil {
		return Response{}, fmt.Errorf("romana-agent at %s: send request: %w", sock, err)
	}
	ans, err := io.ReadAll(conn)
	if err == nil && len(ans) == 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return Response{}, fmt.Errorf("romana-agent at %s: no answer (it may have stopped during the request; a DEL of the attachment cleans up): %w", sock, err)
	}
	var resp Response
	if err := json.Unmarshal(ans, &resp); err != nil {
		return Response{}, fmt.Errorf("romana-agent at %s: decode answer %q: %w", sock, bytes.TrimSpace(ans), err)
	}
	return resp, nil
}

// attached reports whether the host may hold something of the attachment
// that env names: its host-side veth exists, or the name cannot be told.
func (p *Plugin) attached(env map[string]string) bool {
	id, ifName := env["CNI_CONTAINERID"], env["CNI_IFNAME"]
	if id == "" || ifName == "" {
		return true
	}
	return p.LinkExists(VethName(id + ":" + ifName))
}

// VethName is the host-side veth of an allocation ("CONTAINERID:IFNAME"):
// "romana" and the first 9 hex digits of the name's SHA-256 (15
// characters, the kernel's limit).
func VethName(allocation string) string {
	sum := sha256.Sum256([]byte(allocation))
	return "romana" + hex.EncodeToString(sum[:])[:9]
}

package cmdline

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRomanadFlags: flags parse as with Go's flag package before (one dash
// too, negative durations as values), help and --version print and run
// nothing, and a bad command line is a usage error (exit 2) that runs nothing.
func TestRomanadFlags(t *testing.T) {
	var got *Romanad
	run := func(_ context.Context, f *Romanad) error { got = f; return nil }
	var out bytes.Buffer
	err := Execute(context.Background(), NewRomanad(run),
		[]string{"-listen", "", "-socket=/tmp/x.sock", "--max-connections", "7", "--host-cert-validity=2h"}, &out, &out)
	if err != nil || got == nil {
		t.Fatalf("run: %v, %v", err, got)
	}
	if got.Listen != "" || got.Socket != "/tmp/x.sock" || got.MaxConnections != 7 || got.HostCertValidity != 2*time.Hour ||
		got.DataDir != "/var/lib/romana/etcd" {
		t.Errorf("flags: %+v", got)
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"--version"}} {
		got, out = nil, bytes.Buffer{}
		if err := Execute(context.Background(), NewRomanad(run), args, &out, &out); err != nil || got != nil || out.Len() == 0 {
			t.Errorf("%q: %v, ran %v, printed %q", args, err, got != nil, out.String())
		}
	}
	for _, args := range [][]string{{"--bogus"}, {"extra"}, {"--max-connections", "x"}, {"-listen"}} {
		got = nil
		err := Execute(context.Background(), NewRomanad(run), args, &out, &out)
		var u *UsageError
		if !errors.As(err, &u) || got != nil {
			t.Errorf("%q: %v (ran: %v), want a usage error", args, err, got != nil)
		}
		var msg bytes.Buffer
		if code := Exit(&msg, "romanad", err); code != ExitUsage || !strings.Contains(msg.String(), "Run 'romanad --help' for usage.") {
			t.Errorf("%q: exit %d, %q", args, code, msg.String())
		}
	}
	// The run function's errors exit 1, its *UsageError 2.
	for _, tc := range []struct {
		err  error
		code int
	}{{errors.New("etcd down"), ExitError}, {Usagef("--log-level %q", "x"), ExitUsage}, {nil, ExitOK}} {
		err := Execute(context.Background(), NewRomanad(func(context.Context, *Romanad) error { return tc.err }), nil, &out, &out)
		if code := Exit(&out, "romanad", err); code != tc.code {
			t.Errorf("run returning %v: exit %d, want %d", tc.err, code, tc.code)
		}
	}
}

// TestAgentEnv: ROMANA_SERVER and ROMANA_JOIN_TOKEN stand in for --server
// and --join when those are not given, and never show in --help.
func TestAgentEnv(t *testing.T) {
	t.Setenv(EnvServer, "https://env.example:9600")
	t.Setenv(EnvJoinToken, "rmn1.secret")
	var got Agent
	run := func(_ context.Context, f *Agent) error { got = *f; return nil }
	var out bytes.Buffer
	if err := Execute(context.Background(), NewAgent(run), []string{"-min-sync-interval", "-1s", "--bgp"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if got.Server != "https://env.example:9600" || got.Join != "rmn1.secret" || got.MinSyncInterval != -time.Second || !got.BGP.Enabled {
		t.Errorf("from the environment: %+v", got)
	}
	if err := Execute(context.Background(), NewAgent(run), []string{"--server", "unix:///s", "--join", ""}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if got.Server != "unix:///s" || got.Join != "" {
		t.Errorf("flags over the environment: server %q, join %q", got.Server, got.Join)
	}
	out.Reset()
	if err := Execute(context.Background(), NewAgent(run), []string{"--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "secret") || !strings.Contains(out.String(), "--bgp-hold-time") {
		t.Errorf("--help:\n%s", out.String())
	}
}

func TestSingleDash(t *testing.T) {
	fs := NewAgent(nil).Flags()
	for _, tc := range []struct{ in, want string }{
		{"-host h1 -cleanup", "--host h1 --cleanup"},
		{"--host -cleanup", "--host -cleanup"},                // a value stays a value
		{"-resync=2s -x -- -host", "--resync=2s -x -- -host"}, // unknown and after -- untouched
		{"--metrics-listen  -mode fabric", "--metrics-listen  --mode fabric"},
	} {
		if got := strings.Join(singleDash(fs, strings.Split(tc.in, " ")), " "); got != tc.want {
			t.Errorf("singleDash(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

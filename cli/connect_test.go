package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// TestConnection: which server and which credential the command line uses
// for each combination of --server, --config, their environment variables
// and the default admin credential.
func TestConnection(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := pki.NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, server string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if _, err := pki.WriteCredential(p, ca, pki.Admin, time.Hour, server, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flagCred := write("flag.conf", "https://flag.example:9600", 0o600)
	envCred := write("env.conf", "https://env.example:9600", 0o600)
	adminCred := write("admin.conf", "https://admin.example:9600", 0o600)
	groupCred := write("group.conf", "https://group.example:9600", 0o640)
	worldCred := write("world.conf", "https://world.example:9600", 0o604)
	absent := filepath.Join(dir, "absent.conf")

	type want struct {
		server, path, from string
		defaulted          bool
	}
	for _, tc := range []struct {
		name           string
		server, config string // the flags
		env            map[string]string
		admin          string // the default admin credential path
		want           want
		err            string // the whole message, when resolution fails
		usage          bool   // the error is a *UsageError
	}{
		{name: "nothing: the default socket", admin: absent,
			want: want{server: client.DefaultServer, defaulted: true}},
		{name: "admin.conf when it exists", admin: adminCred,
			want: want{server: "https://admin.example:9600", path: adminCred, from: "default"}},
		{name: "--config", config: flagCred, admin: adminCred,
			want: want{server: "https://flag.example:9600", path: flagCred, from: "--config"}},
		{name: "ROMANA_CONFIG", env: map[string]string{EnvConfig: envCred}, admin: adminCred,
			want: want{server: "https://env.example:9600", path: envCred, from: EnvConfig}},
		{name: "--config beats ROMANA_CONFIG", config: flagCred, env: map[string]string{EnvConfig: envCred}, admin: absent,
			want: want{server: "https://flag.example:9600", path: flagCred, from: "--config"}},
		{name: "--server overrides the credential's server", server: "https://other:9600", config: flagCred, admin: absent,
			want: want{server: "https://other:9600", path: flagCred, from: "--config"}},
		{name: "ROMANA_SERVER overrides the credential's server", env: map[string]string{EnvServer: "https://other:9600"}, admin: adminCred,
			want: want{server: "https://other:9600", path: adminCred, from: "default"}},
		{name: "--server beats ROMANA_SERVER", server: "https://flag:9600", env: map[string]string{EnvServer: "https://env:9600", EnvConfig: envCred}, admin: absent,
			want: want{server: "https://flag:9600", path: envCred, from: EnvConfig}},
		{name: "unix socket: no credential even if one is named", server: "unix:///run/x.sock", config: flagCred, admin: adminCred,
			want: want{server: "unix:///run/x.sock"}},
		{name: "unix socket from ROMANA_SERVER", env: map[string]string{EnvServer: "unix:///run/x.sock", EnvConfig: groupCred}, admin: adminCred,
			want: want{server: "unix:///run/x.sock"}},
		{name: "https server without any credential", server: "https://h:9600", admin: absent,
			err: "no credential for https://h:9600: none named by --config or ROMANA_CONFIG, and no " + absent +
				" (romanad writes /etc/romana/admin.conf on first start; or set --config FILE, e.g. one written by romana cert issue; or use --server unix:///run/romana/romanad.sock as root on romanad's machine)"},
		{name: "--config absent", config: absent, admin: adminCred,
			err: "no credential: " + absent + " (from --config) does not exist (romanad writes /etc/romana/admin.conf on first start; or set --config)"},
		{name: "group-readable credential", config: groupCred, admin: absent,
			err: "credential " + groupCred + ": mode 0640 lets other users read the private key; run chmod 600 " + groupCred},
		{name: "world-readable credential", env: map[string]string{EnvConfig: worldCred}, admin: absent,
			err: "credential " + worldCred + ": mode 0604 lets other users read the private key; run chmod 600 " + worldCred},
		{name: "group-readable admin.conf", admin: groupCred,
			err: "credential " + groupCred + ": mode 0640 lets other users read the private key; run chmod 600 " + groupCred},
		{name: "http refused", server: "http://h:9600", config: flagCred, admin: absent, usage: true,
			err: `server "http://h:9600": romanad serves TCP over TLS only: use https://h:9600 with a credential (--config), or unix:///run/romana/romanad.sock as root on romanad's machine`},
		{name: "http from ROMANA_SERVER refused", env: map[string]string{EnvServer: "http://h:9600"}, admin: adminCred, usage: true,
			err: `server "http://h:9600": romanad serves TCP over TLS only: use https://h:9600 with a credential (--config), or unix:///run/romana/romanad.sock as root on romanad's machine`},
		{name: "empty socket path", server: "unix://", admin: absent, usage: true,
			err: `server "unix://": empty socket path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Globals{Server: tc.server, Config: tc.config, adminConfig: tc.admin,
				getenv: func(k string) string { return tc.env[k] }}
			conn, err := g.Connection()
			if tc.err != "" {
				var u *UsageError
				if err == nil || err.Error() != tc.err || errors.As(err, &u) != tc.usage {
					t.Fatalf("error %v (usage error: %t)\nwant %s (usage error: %t)", err, errors.As(err, &u), tc.err, tc.usage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{server: conn.Server, path: conn.CredentialPath, from: conn.CredentialFrom, defaulted: conn.Defaulted}
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
			if (conn.Credential != nil) != (tc.want.path != "") {
				t.Errorf("credential loaded: %t, want %t", conn.Credential != nil, tc.want.path != "")
			}
			if _, err := g.Client(); err != nil {
				t.Errorf("Client: %v", err)
			}
		})
	}
}

// TestConnectionMessages: what a failed connection says, through Main.
func TestConnectionMessages(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := pki.NewCA("other CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing configured and no socket: say that there is no credential.
	r := romanaWith(t, nil, filepath.Join(dir, "absent.conf"), "", "tenant", "list")
	if _, err := os.Stat(strings.TrimPrefix(client.DefaultServer, "unix://")); err == nil {
		t.Log("skipping the no-credential message: this machine runs romanad")
	} else if r.code != ExitError || !strings.HasPrefix(r.stderr, "Error: no credential (no --config, no ROMANA_CONFIG, no "+filepath.Join(dir, "absent.conf")+
		") and romanad's socket unix:///run/romana/romanad.sock does not answer (romanad writes /etc/romana/admin.conf on first start; or set --config, or --server): ") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	// A credential of another CA than the server's: say so.
	srv := servertest.Start(t)
	other := filepath.Join(dir, "other.conf")
	if _, err := pki.WriteCredential(other, ca, pki.Admin, time.Hour, srv.URL, time.Now()); err != nil {
		t.Fatal(err)
	}
	r = romana(t, map[string]string{EnvConfig: other}, "", "tenant", "list")
	if want := "Error: romanad at " + srv.URL + " is not the one credential " + other + " trusts (its certificate does not verify against the credential's CA): "; r.code != ExitError || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("exit %d, stderr %q\nwant prefix %q", r.code, r.stderr, want)
	}
}

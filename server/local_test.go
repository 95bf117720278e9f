package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
	"github.com/romana/romana/sim/simtest"
	"github.com/romana/romana/store"
)

const nobodyEnv = "ROMANA_TEST_NOBODY"

// nobodyJob is what TestHelperNobody, run as uid nobody, tries.
type nobodyJob struct {
	URL, Socket, CAFile string
	Etcd                []string
	// Secrets are files nobody must not read.
	Secrets []string
	// Attacks are requests without a client certificate: each must be 401.
	Attacks []nobodyAttack
}

type nobodyAttack struct{ Method, Path, Body string }

// TestNobodyCannotChangeAnything runs, as the unprivileged uid nobody
// (65534), what any local user could try against romanad on its machine
// (TestHelperNobody): connect to the unix socket, call the TLS API without
// a certificate (the DELETE of an address and allow-all policy
// among others), read romanad's CA key, the admin credential and the
// store's keys, and talk to the embedded etcd. Everything must fail and
// the store must be unchanged. The directories that hold the socket and the
// files are opened to everyone first, so that the socket's and the files'
// own modes are what is tested. (store.TestEmbeddedRefusesUnprivilegedUser
// tries etcdctl as nobody against the embedded etcd, with and without
// stolen certificates.)
func TestNobodyCannotChangeAnything(t *testing.T) {
	simtest.Need(t, os.Geteuid() == 0, "needs root to run a process as uid nobody")
	ctx := context.Background()
	in := servertest.Start(t)
	c := in.Client
	for _, err := range []error{
		second(c.AddNetwork(ctx, api.Network{Name: "net", CIDR: "10.0.0.0/8",
			Fields: []plan.Field{{Name: "host", Bits: 6}, {Name: "tenant", Bits: 6}, {Name: "segment", Bits: 6}}})),
		second(c.AddHost(ctx, api.Host{Name: "h1", IP: netip.MustParseAddr("192.0.2.11")})),
		second(c.AddTenant(ctx, api.Tenant{Name: "t"})),
		second(c.AddSegment(ctx, api.Segment{Tenant: "t", Name: "s"})),
		second(c.Allocate(ctx, api.AddressRequest{Name: "web-1", Host: "h1", Tenant: "t", Segment: "s"})),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	// A directory every user can enter, for the test binary and the files
	// nobody may read (t.TempDir's parent is 0700).
	shared, err := os.MkdirTemp("", "romana-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shared, "server.test")
	copyFile(t, os.Args[0], bin, 0o755)
	caFile := filepath.Join(shared, "ca.crt")
	if err := os.WriteFile(caFile, in.CA.PEM, 0o644); err != nil {
		t.Fatal(err)
	}

	// romanad's first start: its CA and the admin credential, as cmd/romanad makes them.
	pkiDir, adminConf := filepath.Join(shared, "pki"), filepath.Join(shared, "etc", "admin.conf")
	if _, err := (pki.ServerSetup{Dir: pkiDir, Names: []string{"127.0.0.1"}, AdminConfig: adminConf, Server: in.URL}).Setup(time.Now()); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		pkiDir: 0o700 | os.ModeDir, filepath.Join(pkiDir, pki.CAKeyFile): 0o600,
		filepath.Dir(adminConf): 0o700 | os.ModeDir, adminConf: 0o600,
		in.Socket: 0o600 | os.ModeSocket,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: mode %s owner %d; want %s, root", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, want)
		}
	}
	secrets := []string{filepath.Join(pkiDir, pki.CAKeyFile), adminConf}
	keys, err := filepath.Glob(filepath.Join(store.TLSDir(in.DataDir), "*.key"))
	if err != nil || len(keys) == 0 {
		t.Fatalf("the embedded store's keys in %s: %v %v", store.TLSDir(in.DataDir), keys, err)
	}
	secrets = append(secrets, keys...)
	open := []string{pkiDir, filepath.Dir(adminConf), filepath.Dir(in.Socket), filepath.Dir(in.DataDir), in.DataDir}
	for _, d := range open {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	policy := `{"name":"allow-all","priority":1,"direction":["ingress","egress"],"appliedTo":[{"all":true}],"rules":[{"peers":[{"cidr":"0.0.0.0/0"}]}]}`
	// A join with a well-formed token romanad never issued, and a good CSR.
	fakeToken := pki.Token{ID: "0badf00d", Secret: strings.Repeat("ab", 16), CAPin: pki.Fingerprint(in.CA.Cert)}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "host:h1")
	if err != nil {
		t.Fatal(err)
	}
	join, err := json.Marshal(api.JoinRequest{Token: fakeToken.String(), CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	job := nobodyJob{URL: in.URL, Socket: in.Socket, CAFile: caFile, Etcd: in.Etcd().Endpoints(), Secrets: secrets,
		Attacks: []nobodyAttack{
			{"GET", "/v1/snapshot", ""},
			{"DELETE", "/v1/addresses/web-1", ""},
			{"POST", "/v1/policies", policy},
			{"PUT", "/v1/policies/allow-all", policy},
			{"POST", "/v1/hosts", `{"name":"evil","ip":"192.0.2.66"}`},
			{"DELETE", "/v1/hosts/h1", ""},
			{"POST", "/v1/hosts/h1/token", ""},
			{"POST", "/v1/certificates", `{"identity":"admin","csr":""}`},
			{"POST", "/v1/certificates/revoke", `{"identities":["admin"]}`},
			{"POST", "/v1/join", string(join)},
		}}
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}

	before := readStore(t, in)
	cmd := exec.Command(bin, "-test.run=^TestHelperNobody$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Dir = shared
	cmd.Env = []string{nobodyEnv + "=" + string(b), "PATH=/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	if err != nil {
		t.Errorf("as nobody: %v", err)
	}
	if !strings.Contains(string(out), "nobody: every attempt failed") {
		t.Error("the helper did not run to its end")
	}
	if after := readStore(t, in); !after.equal(before) {
		t.Errorf("the store changed while nobody tried (revision %d -> %d)", before.rev, after.rev)
	}
	// The socket still serves root: nobody was refused for who it is.
	root, err := client.New("unix://" + in.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if who, err := root.WhoAmI(ctx); err != nil || who.Identity != "admin" || who.Via != "unix" {
		t.Errorf("root on the socket: %+v, %v", who, err)
	}
}

// TestHelperNobody is run by TestNobodyCannotChangeAnything as uid nobody;
// on its own it does nothing.
func TestHelperNobody(t *testing.T) {
	raw := os.Getenv(nobodyEnv)
	if raw == "" {
		return
	}
	var job nobodyJob
	if err := json.Unmarshal([]byte(raw), &job); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() != 65534 || os.Geteuid() != 65534 {
		t.Fatalf("running as uid %d (euid %d), not nobody", os.Getuid(), os.Geteuid())
	}

	if c, err := net.Dial("unix", job.Socket); !errors.Is(err, syscall.EACCES) {
		if c != nil {
			c.Close()
		}
		t.Errorf("connect to the unix socket %s: %v; want permission denied", job.Socket, err)
	}
	for _, f := range job.Secrets {
		if _, err := os.ReadFile(f); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("read %s: %v; want permission denied", f, err)
		}
	}

	caPEM, err := os.ReadFile(job.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.ClientTLS(caPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	for _, a := range job.Attacks {
		var body io.Reader
		if a.Body != "" {
			body = strings.NewReader(a.Body)
		}
		req, err := http.NewRequest(a.Method, job.URL+a.Path, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", a.Method, a.Path, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb api.ErrorBody
		if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal(b, &eb) != nil || eb.Error == nil || eb.Error.Message == "" {
			t.Errorf("%s %s without a certificate: %d %s; want 401 saying why", a.Method, a.Path, resp.StatusCode, b)
			continue
		}
		fmt.Printf("nobody: %s %s: %d %s\n", a.Method, a.Path, resp.StatusCode, eb.Error.Message)
	}

	// The embedded etcd: without romanad's client certificate, nothing.
	for _, tcfg := range []*tls.Config{
		{InsecureSkipVerify: true},    // any server, no client certificate
		{RootCAs: x509.NewCertPool()}, // verifying, no client certificate
	} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: job.Etcd, TLS: tcfg, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			continue // refused at dial
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if _, err := cli.Get(ctx, "/romana/", clientv3.WithPrefix()); err == nil {
			t.Errorf("etcd %v: nobody read the store", job.Etcd)
		}
		if _, err := cli.Put(ctx, "/romana/v1/hosts/evil", "{}"); err == nil {
			t.Errorf("etcd %v: nobody wrote to the store", job.Etcd)
		}
		cancel()
		cli.Close()
	}
	if !t.Failed() {
		fmt.Println("nobody: every attempt failed")
	}
}

func second[T any](_ T, err error) error { return err }

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

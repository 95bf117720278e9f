package main

// The secure control plane end to end: a host joins with a single-use
// token, its agent converges over mutual TLS, renews its certificate while
// traffic flows, and is cut off when the host is removed.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// asJoinProbe makes the test binary call client.Join once (see joinProbe).
const asJoinProbe = "ROMANA_AGENT_TEST_JOIN_PROBE"

// joinProbe joins romanad at args[0] with token (and a CSR for a new key),
// as an agent would, and prints the outcome: "joined IDENTITY SERIAL" or
// "status N REASON: MESSAGE". It runs inside a host's namespace (the test
// process cannot reach romanad from its own) and returns the exit code.
func joinProbe(args []string, token string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "join probe: want the server URL")
		return 2
	}
	tok, err := pki.ParseToken(token)
	if err != nil {
		fmt.Fprintln(os.Stderr, "join probe:", err)
		return 2
	}
	key, err := pki.NewKey()
	if err != nil {
		fmt.Fprintln(os.Stderr, "join probe:", err)
		return 2
	}
	csr, err := pki.NewCSR(key, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "join probe:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := client.Join(ctx, args[0], tok, csr)
	var ae *api.Error
	switch {
	case err == nil:
		fmt.Printf("joined %s %s\n", resp.Identity, resp.Serial)
	case errors.As(err, &ae):
		fmt.Printf("status %d %s: %s\n", ae.Status, ae.Reason, ae.Message)
	default:
		fmt.Fprintln(os.Stderr, "join probe:", err)
		return 2
	}
	return 0
}

// join runs joinProbe with token from the host's namespace.
func (c *cluster) join(host, token string) string {
	c.t.Helper()
	cmd := c.hosts[host].Command(c.ctx, c.exe, c.url())
	cmd.Env = append(os.Environ(), asJoinProbe+"=1", "ROMANA_JOIN_TOKEN="+token)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("join probe: %v\n%s%s", err, out, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// clientAs returns a client of romanad that presents the credential in
// file and connects from inside the host's namespace, as its agent does.
func (c *cluster) clientAs(host, file string) *client.Client {
	c.t.Helper()
	cred, err := pki.LoadCredential(file)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg, _, err := cred.TLS()
	if err != nil {
		c.t.Fatal(err)
	}
	cl, err := client.New(c.url(), client.WithTLS(cfg), func(tr *http.Transport) { tr.DialContext = dialIn(c.hosts[host].Namespace) })
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.CloseIdleConnections)
	return cl
}

// leaf returns the certificate in a credential file.
func (c *cluster) leaf(file string) *certInfo {
	c.t.Helper()
	cred, err := pki.LoadCredential(file)
	if err != nil {
		c.t.Fatal(err)
	}
	l, err := cred.Leaf()
	if err != nil {
		c.t.Fatal(err)
	}
	return &certInfo{Identity: l.Subject.CommonName, Serial: pki.Serial(l), NotBefore: l.NotBefore, NotAfter: l.NotAfter}
}

// certInfo is what the test reads of a credential's certificate.
type certInfo struct {
	Identity, Serial    string
	NotBefore, NotAfter time.Time
}

// agentLog returns the host's agent log from byte offset from on.
func (c *cluster) agentLog(host string, from int) string {
	b, _ := os.ReadFile(c.agents[host].log)
	if from > len(b) {
		return ""
	}
	return string(b[from:])
}

// certLife is the lifetime of the host and CNI certificates romanad issues
// in TestHostLifecycleEndToEnd; agents renew them at two thirds.
const certLife = 45 * time.Second

// TestHostLifecycleEndToEnd: h1 joins with a single-use token (a second use
// and an expired token are refused), its agent converges over mutual TLS,
// renews its certificate while traffic flows through h1 (and keeps
// converging after its old certificate expired), and removing the host
// cuts the agent off: its requests get 401 and its watch stream ends.
func TestHostLifecycleEndToEnd(t *testing.T) {
	var romanadLog syncBuffer
	c := newCluster(t, servertest.WithHostCertValidity(certLife),
		servertest.WithLogger(slog.New(slog.NewTextHandler(&romanadLog, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("romanad log:\n%s", romanadLog.String())
		}
	})
	ctx := c.ctx
	admin := c.srv.Client

	// h1 starts with a join token and no credential; h2 and h3 with the
	// credentials the test issues.
	tok, err := admin.CreateToken(ctx, "h1", "10m")
	if err != nil {
		t.Fatal(err)
	}
	c.startAgentEnv("h1", []string{"ROMANA_JOIN_TOKEN=" + tok.Token})
	c.startAgent("h2")
	c.startAgent("h3")
	c.waitHealthy("h1", "h2", "h3")
	c.waitRoutes("h1", "h2", "h3")
	joined := c.leaf(c.credPath("h1"))
	if joined.Identity != "host:h1" {
		t.Fatalf("h1 joined as %q", joined.Identity)
	}
	if life := joined.NotAfter.Sub(joined.NotBefore); life < certLife || life > certLife+certLife/10+time.Second {
		t.Fatalf("h1's certificate lives %v (%v to %v), want about %v", life, joined.NotBefore, joined.NotAfter, certLife)
	}
	certs, err := admin.ListCerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rec api.CertRecord
	for _, r := range certs {
		if r.Serial == joined.Serial {
			rec = r
		}
	}
	if rec.Identity != "host:h1" || !strings.Contains(rec.IssuedBy, "join token") {
		t.Fatalf("romanad's record of h1's certificate %s: %+v", joined.Serial, rec)
	}
	if log := c.agentLog("h1", 0); !strings.Contains(log, "joined romanad") || !strings.Contains(log, `identity=host:h1`) {
		t.Fatalf("h1's agent log does not show the join:\n%s", log)
	}
	expect.Eventually(t, "h1's agent keeps the CNI plugin's credential", wait, func() error {
		if _, err := os.Stat(c.cniPath("h1")); err != nil {
			return err
		}
		if l := c.leaf(c.cniPath("h1")); l.Identity != "cni:h1" {
			return errors.New(l.Identity)
		}
		return nil
	})
	// Converged over TLS: isolation and routes, in packets.
	c.check(matrix)

	t.Run("a used token is refused", func(t *testing.T) {
		c.t = t
		if got := c.join("h2", tok.Token); !strings.HasPrefix(got, "status 401 Unauthorized: ") {
			t.Fatalf("second use of h1's join token: %s, want 401", got)
		}
	})
	c.t = t

	t.Run("an expired token is refused", func(t *testing.T) {
		c.t = t
		short, err := admin.CreateToken(ctx, "h2", "1s")
		if err != nil {
			t.Fatal(err)
		}
		expect.Eventually(t, "the token expires", time.Until(short.Expires.Add(10*time.Second)), func() error {
			if !time.Now().After(short.Expires.Add(100 * time.Millisecond)) {
				return errors.New("not yet")
			}
			return nil
		})
		got := c.join("h2", short.Token)
		if !strings.HasPrefix(got, "status 401 Unauthorized: ") || !strings.Contains(got, "expired") {
			t.Fatalf("expired join token: %s, want 401 saying it expired", got)
		}
	})
	c.t = t

	t.Run("renewal while traffic flows", func(t *testing.T) {
		c.t = t
		// A stream through h1 (a1 on h1 to a2 on h2) and new connections to
		// and from h1's endpoints, all through h1's isolation rules.
		tr := c.startTraffic("a1", "a2", [2]string{"a3", "a1b"}, [2]string{"a1", "a3"})
		tr.progress(t, "traffic running")
		logAt := len(c.agentLog("h1", 0))
		expect.Eventually(t, "h1's agent renews its certificate before it expires", time.Until(joined.NotAfter), func() error {
			if l := c.leaf(c.credPath("h1")); l.Serial == joined.Serial {
				return errors.New("serial " + l.Serial)
			}
			return nil
		})
		renewed := c.leaf(c.credPath("h1"))
		if renewed.Identity != "host:h1" || !renewed.NotAfter.After(joined.NotAfter) {
			t.Fatalf("renewed certificate %+v after %+v", renewed, joined)
		}
		if log := c.agentLog("h1", 0); !strings.Contains(log, "renewed host certificate") || !strings.Contains(log, renewed.Serial) {
			t.Fatalf("h1's agent log does not show the renewal to serial %s:\n%s", renewed.Serial, log)
		}
		tr.progress(t, "traffic after the renewal")
		// The renewal closed the agent's connections, its watch stream too:
		// it follows romanad again with the new certificate, from where it
		// was (a change made now reaches it; this one, an address on
		// another host, changes nothing on h1).
		if _, err := admin.Allocate(ctx, api.AddressRequest{Name: "after-renewal", Host: "h2", Tenant: "acme", Segment: "default"}); err != nil {
			t.Fatal(err)
		}
		defer admin.Release(ctx, "after-renewal")
		expect.Eventually(t, "h1's agent watches again after the renewal", wait, func() error {
			log := c.agentLog("h1", logAt)
			i := strings.Index(log, "watch ended")
			if !strings.Contains(log, "renewed host certificate") || i < 0 || !strings.Contains(log[i:], `msg="watch resumed"`) {
				return errors.New(log)
			}
			return nil
		})
		// romanad ends what still uses the old certificate when it expires,
		// and refuses it from then on.
		expect.Eventually(t, "h1's old certificate expires", time.Until(joined.NotAfter.Add(10*time.Second)), func() error {
			if !time.Now().After(joined.NotAfter.Add(500 * time.Millisecond)) {
				return errors.New("not yet")
			}
			return nil
		})
		tr.progress(t, "traffic after the old certificate expired")
		// Renewing touched nothing in h1's kernel: the agent re-read a
		// snapshot equal to what it had.
		for _, changed := range []string{`msg="nftables `, `msg="route `, `msg="sysctl set"`} {
			if log := c.agentLog("h1", logAt); strings.Contains(log, changed) {
				t.Errorf("h1's agent changed its host's state across the renewal (%s):\n%s", changed, log)
			}
		}

		// A change made after the renewal converges: a new endpoint on h1.
		a, err := admin.Allocate(ctx, api.AddressRequest{Name: "a1c", Host: "h1", Tenant: "acme", Segment: "default", Interface: "rv-a1c"})
		if err != nil {
			t.Fatal(err)
		}
		ep, err := c.lab.AddEndpoint(ctx, c.hosts["h1"], "a1c", a.IP, "rv-a1c")
		if err != nil {
			t.Fatal(err)
		}
		c.eps["a1c"] = ep
		c.serveEcho(ep, echoPort)
		expect.Eventually(t, "a3 reaches the new endpoint a1c on h1", wait, func() error {
			return c.tcp("a3", "a1c")
		})
		c.check([]probe{{"a1c", "a2", true}, {"a2", "a1c", true}, {"w2", "a1c", false}, {"w1", "a1c", false}})
		// It never presented the expired certificate, and no stream of it
		// was left on the old one.
		if log := c.agentLog("h1", logAt); strings.Contains(log, "client certificate") {
			t.Errorf("romanad refused h1's agent after the renewal:\n%s", log)
		}
		if log := romanadLog.String(); strings.Contains(log, joined.Serial+") refused") || strings.Contains(log, "client certificate expired") {
			t.Errorf("romanad saw h1's expired certificate (serial %s) in use:\n%s", joined.Serial, log)
		}
		lines, connects, err := tr.stop()
		if err != nil {
			t.Fatalf("traffic broke during the renewal: %v", err)
		}
		t.Logf("%d lines and %d new connections went through h1 across the renewal (serial %s -> %s)", lines, connects, joined.Serial, renewed.Serial)
	})
	c.t = t
	if t.Failed() {
		t.FailNow()
	}

	t.Run("host remove cuts it off", func(t *testing.T) {
		c.t = t
		// romanad removes only a host without addresses.
		addrs, err := admin.ListAddresses(ctx, api.AddressFilter{Host: "h1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if err := admin.Release(ctx, a.Name); err != nil {
				t.Fatal(err)
			}
		}
		// Before: the agent's own credential works.
		host := c.clientAs("h1", c.credPath("h1"))
		if _, err := host.Snapshot(ctx); err != nil {
			t.Fatalf("h1's credential before the removal: %v", err)
		}
		logAt := len(c.agentLog("h1", 0))
		if err := admin.RemoveHost(ctx, "h1"); err != nil {
			t.Fatalf("remove host h1: %v", err)
		}
		for _, f := range []string{c.credPath("h1"), c.cniPath("h1")} {
			cl := c.clientAs("h1", f)
			_, err := cl.Snapshot(ctx)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != 401 || !strings.Contains(ae.Message, "revoked") {
				t.Errorf("snapshot with %s after the host's removal: %v, want 401 revoked", f, err)
			}
		}
		_, err = c.clientAs("h1", c.cniPath("h1")).Allocate(ctx, api.AddressRequest{Name: "late:eth0", Host: "h1", Tenant: "acme", Segment: "default"})
		if api.ReasonOf(err) != api.ReasonUnauthorized {
			t.Errorf("allocation with h1's CNI credential after the removal: %v, want 401", err)
		}
		expect.Eventually(t, "h1's agent is cut off: its watch stream ends and romanad refuses it", wait, func() error {
			log := c.agentLog("h1", logAt)
			i := strings.Index(log, "watch ended")
			if i < 0 || !strings.Contains(log[i:], "revoked") {
				return errors.New(log)
			}
			return nil
		})
		if log := romanadLog.String(); !strings.Contains(log, `msg="watch stream ended: client certificate revoked" identity=host:h1`) {
			t.Errorf("romanad's log does not say it ended h1's watch stream:\n%s", log)
		}
		// The other hosts forget h1.
		for _, h := range []string{"h2", "h3"} {
			expect.Eventually(t, h+" drops its route to h1", wait, func() error {
				out := c.ourRoutes(h)
				if strings.Contains(out, c.cidrs["h1"].String()+" ") {
					return errors.New(out)
				}
				return nil
			})
		}
		c.check([]probe{{"a2", "a3", true}, {"w2", "a3", false}})
	})
	c.t = t
}

// syncBuffer is a bytes.Buffer safe for a logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

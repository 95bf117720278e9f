package bootstrap

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/kubetest"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// TestRun against a real kube-apiserver and a real romanad (admin over its
// unix socket, as the bootstrap Job): the kube credential works as
// identity kube, each node's token joins as that node's host, nodes without
// a host wait, and a second pass changes nothing.
func TestRun(t *testing.T) {
	k := kubetest.Start(t)
	rd := servertest.Start(t)
	ctx := context.Background()
	admin, err := client.New("unix://" + rd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DefaultNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node-a", "node-b"} {
		if _, err := k.Clientset.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// romana-kube has made node-a's host, not yet node-b's.
	if _, err := admin.AddHost(ctx, api.Host{Name: "node-a", IP: netip.MustParseAddr("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Namespace: DefaultNamespace, KubeSecret: DefaultKubeSecret, JoinSecret: DefaultJoinSecret, Server: rd.URL}

	r, err := Run(ctx, cfg, admin, k.Clientset)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{KubeIssued: true, Tokens: []string{"node-a"}, Waiting: []string{"node-b"}}); !reflect.DeepEqual(r, want) {
		t.Fatalf("first pass: %+v, want %+v", r, want)
	}

	// The credential is identity kube.
	ks, err := k.Clientset.CoreV1().Secrets(DefaultNamespace).Get(ctx, DefaultKubeSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "kube.conf")
	if err := os.WriteFile(file, ks.Data[KubeCredentialKey], 0o600); err != nil {
		t.Fatal(err)
	}
	cred, err := pki.LoadCredential(file)
	if err != nil {
		t.Fatal(err)
	}
	kc, _, err := client.FromCredential(cred, "")
	if err != nil {
		t.Fatal(err)
	}
	if who, err := kc.WhoAmI(ctx); err != nil || who.Identity != "kube" {
		t.Fatalf("the kube credential is %+v, %v", who, err)
	}

	// node-a's token joins as host:node-a.
	join := func(node string) {
		t.Helper()
		js, err := k.Clientset.CoreV1().Secrets(DefaultNamespace).Get(ctx, DefaultJoinSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := pki.ParseToken(string(js.Data[node]))
		if err != nil {
			t.Fatalf("token of %s: %v", node, err)
		}
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, pki.Host(node).String())
		resp, err := client.Join(ctx, rd.URL, tok, csr)
		if err != nil || resp.Identity != pki.Host(node).String() {
			t.Fatalf("join %s: %+v, %v", node, resp.Identity, err)
		}
	}
	join("node-a")

	// node-b's host appears: the next pass gives it a token, and only it.
	if _, err := admin.AddHost(ctx, api.Host{Name: "node-b", IP: netip.MustParseAddr("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	before, _ := k.Clientset.CoreV1().Secrets(DefaultNamespace).Get(ctx, DefaultJoinSecret, metav1.GetOptions{})
	r, err = Run(ctx, cfg, admin, k.Clientset)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Tokens: []string{"node-b"}}); !reflect.DeepEqual(r, want) {
		t.Fatalf("second pass: %+v, want %+v", r, want)
	}
	after, _ := k.Clientset.CoreV1().Secrets(DefaultNamespace).Get(ctx, DefaultJoinSecret, metav1.GetOptions{})
	if string(after.Data["node-a"]) != string(before.Data["node-a"]) {
		t.Error("node-a's token was replaced")
	}
	join("node-b")

	// Nothing left to do.
	if r, err = Run(ctx, cfg, admin, k.Clientset); err != nil || !reflect.DeepEqual(r, Result{}) {
		t.Fatalf("third pass: %+v, %v", r, err)
	}
	again, _ := k.Clientset.CoreV1().Secrets(DefaultNamespace).Get(ctx, DefaultKubeSecret, metav1.GetOptions{})
	if !reflect.DeepEqual(again.Data, ks.Data) {
		t.Error("the kube credential was replaced")
	}
}

// TestUntil: one run waits for the nodes' hosts, writing each node's token
// as soon as its host exists (node-a's while node-b still has none), and
// returns once every node has one; with no host coming it fails after its
// timeout naming the node.
func TestUntil(t *testing.T) {
	k := kubetest.Start(t)
	rd := servertest.Start(t)
	ctx := context.Background()
	admin, err := client.New("unix://" + rd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	cs := k.Clientset
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DefaultNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node-a", "node-b"} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Namespace: DefaultNamespace, KubeSecret: DefaultKubeSecret, JoinSecret: DefaultJoinSecret, Server: rd.URL}
	type out struct {
		r   Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		r, err := Until(ctx, cfg, admin, cs, nil, 10*time.Millisecond, time.Hour)
		done <- out{r, err}
	}()
	token := func(node string) error {
		js, err := cs.CoreV1().Secrets(DefaultNamespace).Get(ctx, DefaultJoinSecret, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(js.Data[node]) == 0 {
			return fmt.Errorf("no token for %s in %v", node, slices.Sorted(maps.Keys(js.Data)))
		}
		return nil
	}
	if _, err := admin.AddHost(ctx, api.Host{Name: "node-a", IP: netip.MustParseAddr("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "node-a's token while node-b has no host", 30*time.Second, func() error { return token("node-a") })
	select {
	case o := <-done:
		t.Fatalf("Until returned while node-b waits: %+v, %v", o.r, o.err)
	default:
	}
	if _, err := admin.AddHost(ctx, api.Host{Name: "node-b", IP: netip.MustParseAddr("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if want := (Result{KubeIssued: true, Tokens: []string{"node-a", "node-b"}}); o.err != nil || !reflect.DeepEqual(o.r, want) {
		t.Fatalf("Until: %+v, %v; want %+v", o.r, o.err, want)
	}

	// A node whose host never comes: a clear error after the timeout.
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-c"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := Until(ctx, cfg, admin, cs, nil, 10*time.Millisecond, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not done after 50ms") || !strings.Contains(err.Error(), "node-c") || !reflect.DeepEqual(r.Waiting, []string{"node-c"}) {
		t.Errorf("Until with node-c hostless: %+v, %v", r, err)
	}
}

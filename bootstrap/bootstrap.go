// Package bootstrap gives Romana's components in a Kubernetes cluster the
// credentials romanad's join flow makes (docs/security.md), as Secrets in
// Romana's namespace: romana-kube's credential of identity kube (a key made
// here, a certificate romanad signs) and a single-use join token per node
// for its agent. It acts as romanad's admin (romanad's unix socket, on
// romanad's node) and writes only those two Secrets.
//
// Run is one pass and safe to repeat: an existing credential is kept, a
// node that has a token in the Secret gets no other, and a node whose
// Romana host romana-kube has not made yet is reported, to be retried.
// Until repeats it, within the one run of the bootstrap Job, until every
// node has its token: each node's token is written as soon as its host
// exists (its agent waits for it), and nothing waits for the Job's
// restart back-off.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
)

// Romanad is what Run asks of romanad, as admin (*client.Client).
type Romanad interface {
	ListHosts(ctx context.Context) ([]api.Host, error)
	CreateToken(ctx context.Context, host, ttl string) (api.TokenResponse, error)
	RequestCert(ctx context.Context, r api.CertRequest) (api.CertResponse, error)
}

// Defaults of Config, as deploy/kubernetes names them.
const (
	DefaultNamespace  = "romana-system"
	DefaultKubeSecret = "romana-kube"
	DefaultJoinSecret = "romana-join"
	// KubeCredentialKey is the key of the credential in KubeSecret.
	KubeCredentialKey = "kube.conf"
)

// Config says where the Secrets go.
type Config struct {
	Namespace  string
	KubeSecret string // holds KubeCredentialKey
	JoinSecret string // a key per node name: its join token
	// Server is romanad's https:// URL written into the kube credential
	// (romana-kube's --server overrides it).
	Server   string
	TokenTTL string // "" romanad's default (1h)
}

// Result says what Run did.
type Result struct {
	KubeIssued bool     // the kube credential was made now
	Tokens     []string // nodes given a join token now
	Waiting    []string // nodes with no Romana host yet (no token possible)
}

// Run makes what is missing.
func Run(ctx context.Context, cfg Config, rom Romanad, kc kubernetes.Interface) (Result, error) {
	var r Result
	secrets := kc.CoreV1().Secrets(cfg.Namespace)
	switch _, err := secrets.Get(ctx, cfg.KubeSecret, metav1.GetOptions{}); {
	case apierrors.IsNotFound(err):
		conf, err := kubeCredential(ctx, rom, cfg.Server)
		if err != nil {
			return r, err
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: cfg.KubeSecret, Namespace: cfg.Namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "romana"}},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{KubeCredentialKey: conf}}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return r, fmt.Errorf("create Secret %s/%s: %w (the certificate was issued; revoke it with romana cert revoke --identity kube if it is lost)", cfg.Namespace, cfg.KubeSecret, err)
		}
		r.KubeIssued = true
	case err != nil:
		return r, fmt.Errorf("get Secret %s/%s: %w", cfg.Namespace, cfg.KubeSecret, err)
	}

	nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return r, fmt.Errorf("list nodes: %w", err)
	}
	hosts, err := rom.ListHosts(ctx)
	if err != nil {
		return r, fmt.Errorf("romanad: list hosts: %w", err)
	}
	known := map[string]bool{}
	for _, h := range hosts {
		known[h.Name] = true
	}
	join, err := secrets.Get(ctx, cfg.JoinSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		join = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: cfg.JoinSecret, Namespace: cfg.Namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "romana"}}, Type: corev1.SecretTypeOpaque}
		if join, err = secrets.Create(ctx, join, metav1.CreateOptions{}); err != nil {
			return r, fmt.Errorf("create Secret %s/%s: %w", cfg.Namespace, cfg.JoinSecret, err)
		}
	} else if err != nil {
		return r, fmt.Errorf("get Secret %s/%s: %w", cfg.Namespace, cfg.JoinSecret, err)
	}
	if join.Data == nil {
		join.Data = map[string][]byte{}
	}
	names := make([]string, 0, len(nodes.Items))
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, ok := join.Data[n]; ok {
			continue
		}
		if !known[n] {
			r.Waiting = append(r.Waiting, n)
			continue
		}
		tok, err := rom.CreateToken(ctx, n, cfg.TokenTTL)
		if err != nil {
			return r, fmt.Errorf("romanad: join token for host %s: %w", n, err)
		}
		join.Data[n] = []byte(tok.Token)
		r.Tokens = append(r.Tokens, n)
	}
	if len(r.Tokens) > 0 {
		// Update guards with the resourceVersion read: a concurrent
		// writer makes this fail rather than lose its keys.
		if _, err := secrets.Update(ctx, join, metav1.UpdateOptions{}); err != nil {
			return r, fmt.Errorf("update Secret %s/%s with tokens for %v: %w", cfg.Namespace, cfg.JoinSecret, r.Tokens, err)
		}
	}
	return r, nil
}

// Until runs Run every interval until no node waits for its Romana host,
// ctx ends or timeout passes: romanad's socket not there yet, the API
// server unreachable and nodes without a host are all waited for (said
// in log when what it waits for changes, and every 30 s). The Result
// gathers what every pass did; after the timeout the error names what
// was still missing.
func Until(ctx context.Context, cfg Config, rom Romanad, kc kubernetes.Interface, log *slog.Logger, interval, timeout time.Duration) (Result, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	var (
		all       Result
		said      string
		saidAt    time.Time
		tick      = time.NewTicker(interval)
		lastError error
	)
	defer tick.Stop()
	for {
		r, err := Run(ctx, cfg, rom, kc)
		all.KubeIssued = all.KubeIssued || r.KubeIssued
		all.Tokens = append(all.Tokens, r.Tokens...)
		all.Waiting = r.Waiting
		if r.KubeIssued {
			log.Info("wrote romana-kube's credential (identity kube)", "secret", cfg.Namespace+"/"+cfg.KubeSecret)
		}
		if len(r.Tokens) > 0 {
			log.Info("wrote join tokens", "nodes", r.Tokens, "secret", cfg.Namespace+"/"+cfg.JoinSecret)
		}
		if err == nil && len(r.Waiting) == 0 {
			return all, nil
		}
		var what string
		if err != nil {
			what, lastError = err.Error(), err
		} else {
			what, lastError = "nodes without a Romana host yet (romana-kube makes them): "+fmt.Sprint(r.Waiting), nil
		}
		if time.Since(start) >= timeout {
			if lastError != nil {
				return all, fmt.Errorf("bootstrap: not done after %v: %w", timeout, lastError)
			}
			return all, fmt.Errorf("bootstrap: not done after %v: %s", timeout, what)
		}
		if what != said || time.Since(saidAt) >= 30*time.Second {
			log.Info("waiting", "for", what, "waited", time.Since(start).Round(time.Second))
			said, saidAt = what, time.Now()
		}
		select {
		case <-ctx.Done():
			return all, fmt.Errorf("bootstrap: %w while waiting for %s", ctx.Err(), what)
		case <-tick.C:
		}
	}
}

// kubeCredential makes a key, has romanad sign a certificate of identity
// kube for it and returns the credential file's contents.
func kubeCredential(ctx context.Context, rom Romanad, server string) ([]byte, error) {
	if server == "" {
		return nil, errors.New("bootstrap: romanad's https:// URL for the kube credential is required")
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, pki.Kube.String())
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	resp, err := rom.RequestCert(ctx, api.CertRequest{Identity: pki.Kube.String(), CSR: string(csr)})
	if err != nil {
		return nil, fmt.Errorf("romanad: certificate for identity kube: %w", err)
	}
	cred := pki.Credential{Kind: pki.CredentialKind, Server: server, Identity: resp.Identity, CA: resp.CA, Cert: resp.Cert, Key: string(keyPEM)}
	return yaml.Marshal(cred)
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// secretSource reads one key of one Kubernetes Secret through the API
// server with the pod's ServiceAccount token (the in-cluster
// configuration): the agent's join token, the key named after its node, in
// Secret romana-join. The agent's Role may get that Secret only (the same
// keys its mounted volume shows), and it asks only while it has no
// credential. It is what makes the token reach the agent within a second
// of the bootstrap's write: a Secret volume is updated only at the
// kubelet's next sync of the pod, which was 67 to 85 s later in the demo.
type secretSource struct {
	url, token string // token: the ServiceAccount token file's path
	client     *http.Client
	key        string
}

// Default paths of the in-cluster configuration.
const (
	saTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	saCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// newSecretSource returns the source of key in Secret ref
// ("NAMESPACE/NAME") from the in-cluster configuration.
func newSecretSource(ref, key string) (*secretSource, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--join-kube %q: want NAMESPACE/NAME", ref)
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("--join-kube: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset)")
	}
	ca, err := os.ReadFile(saCAFile)
	if err != nil {
		return nil, fmt.Errorf("--join-kube: the ServiceAccount's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("--join-kube: no certificate in %s", saCAFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &secretSource{url: "https://" + net.JoinHostPort(host, port) + "/api/v1/namespaces/" + ns + "/secrets/" + name,
		token: saTokenFile, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}, key: key}, nil
}

// get returns the key's value, "" when the Secret or the key is not there
// yet.
func (s *secretSource) get(ctx context.Context) (string, error) {
	tok, err := os.ReadFile(s.token)
	if err != nil {
		return "", fmt.Errorf("the ServiceAccount token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("get %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "", nil
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("get %s: %s", s.url, resp.Status)
	}
	var sec struct {
		Data map[string][]byte `json:"data"` // base64 in JSON
	}
	if err := json.NewDecoder(resp.Body).Decode(&sec); err != nil {
		return "", fmt.Errorf("get %s: %w", s.url, err)
	}
	return strings.TrimSpace(string(sec.Data[s.key])), nil
}

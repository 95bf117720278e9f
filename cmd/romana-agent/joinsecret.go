package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
)

// secretSource reads one key of one Kubernetes Secret through the API
// server with the pod's ServiceAccount (client-go's in-cluster
// configuration): the agent's join token, the key named after its node, in
// Secret romana-join. The agent's Role may get that Secret only (the same
// keys its mounted volume shows), and it asks only while it has no
// credential. It is what makes the token reach the agent within a second
// of the bootstrap's write: a Secret volume is updated only at the
// kubelet's next sync of the pod, which was 67 to 85 s later in the demo.
type secretSource struct {
	secrets corev1client.SecretInterface
	ref     string // NAMESPACE/NAME
	name    string
	key     string
}

// newSecretSource returns the source of key in Secret ref
// ("NAMESPACE/NAME") from the in-cluster configuration.
func newSecretSource(ref, key string) (*secretSource, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--join-kube: %w", err)
	}
	return secretSourceFor(cfg, ref, key)
}

// secretSourceFor returns the source of key in Secret ref through the API
// server cfg names.
func secretSourceFor(cfg *rest.Config, ref, key string) (*secretSource, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--join-kube %q: want NAMESPACE/NAME", ref)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 5 * time.Second
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("--join-kube: %w", err)
	}
	return &secretSource{secrets: kc.CoreV1().Secrets(ns), ref: ref, name: name, key: key}, nil
}

// get returns the key's value, "" when the Secret or the key is not there
// yet.
func (s *secretSource) get(ctx context.Context) (string, error) {
	sec, err := s.secrets.Get(ctx, s.name, metav1.GetOptions{})
	var status apierrors.APIStatus
	switch {
	case apierrors.IsNotFound(err):
		return "", nil
	case errors.As(err, &status):
		return "", fmt.Errorf("get Secret %s: %d %w", s.ref, status.Status().Code, err)
	case err != nil:
		return "", fmt.Errorf("get Secret %s: %w", s.ref, err)
	}
	return strings.TrimSpace(string(sec.Data[s.key])), nil
}

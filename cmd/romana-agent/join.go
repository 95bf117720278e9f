package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// waitJoinToken waits until file holds a join token and returns it,
// reading it every interval (a missing or empty file is no token yet),
// saying what it waits for when it starts and every 30 s, and failing
// after timeout. In Kubernetes the file is the node's key of the Secret
// romana-join: the bootstrap Job writes it once romana-kube has made the
// node a Romana host, and the kubelet updates the mounted volume at its
// next sync of the pod (within its sync period, a minute by default).
// Waiting here, rather than exiting until the file is there, keeps the
// agent out of the kubelet's restart back-off (10, 20, 40, 80 s...).
//
// With secret set, it also reads the token from the Secret through the
// API server each interval (secretSource), whichever comes first; a
// failed read is said, not fatal (the API server may not answer yet).
func waitJoinToken(ctx context.Context, log *slog.Logger, file string, secret *secretSource, interval, timeout time.Duration) (string, error) {
	start := time.Now()
	said := time.Time{}
	var lastErr error // of the Secret's last read
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(file)
		switch {
		case err == nil && strings.TrimSpace(string(b)) != "":
			if !said.IsZero() {
				log.Info("join token found", "file", file, "waited", time.Since(start).Round(time.Millisecond))
			}
			return strings.TrimSpace(string(b)), nil
		case err != nil && !errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("--join-file %s: %w", file, err)
		}
		if secret != nil {
			tok, err := secret.get(ctx)
			switch {
			case err != nil:
				lastErr = err
			case tok != "":
				log.Info("join token read from the Secret", "secret", secret.ref, "key", secret.key, "waited", time.Since(start).Round(time.Millisecond))
				return tok, nil
			}
		}
		if time.Since(start) >= timeout {
			return "", fmt.Errorf("no join token in %s after %v (--join-wait): in Kubernetes the bootstrap Job writes the node's key of Secret romana-join once romana-kube has made the node a Romana host (kubectl -n romana-system get job,pods; the bootstrap's log names the nodes it waits for)", file, timeout)
		}
		if said.IsZero() || time.Since(said) >= 30*time.Second {
			log.Info("no credential yet: waiting for the join token", "file", file, "secret", secret != nil, "waited", time.Since(start).Round(time.Second), "timeout", timeout, "lastSecretError", lastErr)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for the join token in %s: %w", file, ctx.Err())
		case <-tick.C:
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// TestWaitJoinToken: the agent waits for its join file (missing, then
// empty, then the token) instead of exiting; it fails after the timeout
// naming the file, and on a file it cannot read.
func TestWaitJoinToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "node1")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	got := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		tok, err := waitJoinToken(ctx, log, file, nil, time.Millisecond, time.Hour)
		got <- tok
		errc <- err
	}()
	// The kubelet writes the Secret's key: first an empty file, then the
	// token (a symlink swap in a real volume; a rename here).
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".tmp")
	if err := os.WriteFile(tmp, []byte("rmn1.abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	if tok, err := <-got, <-errc; tok != "rmn1.abc" || err != nil {
		t.Fatalf("waitJoinToken = %q, %v; want rmn1.abc", tok, err)
	}

	// Never there: a clear error after the timeout.
	_, err := waitJoinToken(ctx, log, filepath.Join(dir, "node2"), nil, time.Millisecond, 20*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no join token in "+filepath.Join(dir, "node2")+" after 20ms") {
		t.Errorf("timeout: err %v", err)
	}
	if !strings.Contains(logs.String(), "waiting for the join token") {
		t.Errorf("nothing said while waiting:\n%s", logs.String())
	}
	// A directory is not "no token yet".
	if _, err := waitJoinToken(ctx, log, dir, nil, time.Millisecond, time.Hour); err == nil {
		t.Error("a directory was waited on")
	}
	// Cancelled.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := waitJoinToken(cctx, log, filepath.Join(dir, "node3"), nil, time.Millisecond, time.Hour); err == nil {
		t.Error("a cancelled wait returned no error")
	}
}

// TestWaitJoinTokenFromSecret: the token comes from the Secret through the
// API server (a stateful fake: no Secret, then a Secret without the
// node's key, then with it) before the file ever has it; the request
// carries the ServiceAccount token; a refusal is waited through.
func TestWaitJoinTokenFromSecret(t *testing.T) {
	var (
		mu     sync.Mutex
		status = http.StatusForbidden
		data   = map[string][]byte{}
		auth   []string
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		auth = append(auth, r.Header.Get("Authorization"))
		if r.URL.Path != "/api/v1/namespaces/romana-system/secrets/romana-join" {
			http.NotFound(w, r)
			return
		}
		if status != http.StatusOK {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"kind": "Secret", "apiVersion": "v1", "data": data})
	}))
	defer srv.Close()
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("sa-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	src, err := secretSourceFor(&rest.Config{Host: srv.URL, BearerTokenFile: tokFile,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, "romana-system/romana-join", "node1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := src.get(ctx); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a refusal: %v", err)
	}
	mu.Lock()
	status = http.StatusNotFound
	mu.Unlock()
	if tok, err := src.get(ctx); tok != "" || err != nil {
		t.Errorf("no Secret: %q, %v", tok, err)
	}
	mu.Lock()
	status, data["node2"] = http.StatusOK, []byte("rmn1.other")
	mu.Unlock()
	if tok, err := src.get(ctx); tok != "" || err != nil {
		t.Errorf("no key for node1: %q, %v", tok, err)
	}

	var logs bytes.Buffer
	got := make(chan string, 1)
	go func() {
		tok, err := waitJoinToken(ctx, slog.New(slog.NewTextHandler(&logs, nil)), filepath.Join(t.TempDir(), "node1"), src, time.Millisecond, time.Hour)
		if err != nil {
			t.Error(err)
		}
		got <- tok
	}()
	mu.Lock()
	data["node1"] = []byte("rmn1.fromsecret\n")
	mu.Unlock()
	if tok := <-got; tok != "rmn1.fromsecret" {
		t.Errorf("token %q, want rmn1.fromsecret", tok)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range auth {
		if a != "Bearer sa-token" {
			t.Errorf("Authorization %q", a)
		}
	}
}

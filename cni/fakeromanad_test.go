package cni

// TEMPORARY development stand-in for server/servertest; removed when it lands.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

type fakeRomanad struct {
	mu    sync.Mutex
	addrs map[string]api.Address
	next  netip.Addr
}

func startFakeRomanad(t testing.TB) (string, *client.Client) {
	f := &fakeRomanad{addrs: map[string]api.Address{}, next: netip.MustParseAddr("10.1.1.10")}
	sock := filepath.Join(t.TempDir(), "romanad.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return "unix://" + sock, c
}

func (f *fakeRomanad) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeErr := func(e *api.Error) {
		w.WriteHeader(e.Status)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: e})
	}
	switch {
	case r.URL.Path == "/healthz":
		fmt.Fprint(w, "ok")
	case r.URL.Path == "/v1/addresses" && r.Method == "POST":
		var req api.AddressRequest
		json.NewDecoder(r.Body).Decode(&req)
		if req.Tenant == "nosuch" {
			writeErr(api.Errorf(api.ReasonNotFound, "tenant %q not found", req.Tenant))
			return
		}
		if a, ok := f.addrs[req.Name]; ok {
			json.NewEncoder(w).Encode(a)
			return
		}
		a := api.Address{Name: req.Name, IP: f.next, Network: "n", Host: req.Host, Tenant: req.Tenant, Segment: req.Segment, Interface: req.Interface, Attrs: req.Attrs}
		f.next = f.next.Next()
		f.addrs[req.Name] = a
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(a)
	case r.URL.Path == "/v1/addresses" && r.Method == "GET":
		out := []api.Address{}
		for _, a := range f.addrs {
			if h := r.URL.Query().Get("host"); h == "" || h == a.Host {
				out = append(out, a)
			}
		}
		json.NewEncoder(w).Encode(out)
	case strings.HasPrefix(r.URL.Path, "/v1/addresses/"):
		name := strings.TrimPrefix(r.URL.Path, "/v1/addresses/")
		a, ok := f.addrs[name]
		if r.Method == "DELETE" {
			delete(f.addrs, name)
			w.WriteHeader(204)
			return
		}
		if !ok {
			writeErr(api.Errorf(api.ReasonNotFound, "address %q not found", name))
			return
		}
		json.NewEncoder(w).Encode(a)
	default:
		writeErr(api.Errorf(api.ReasonNotFound, "no route %s %s", r.Method, r.URL.Path))
	}
}

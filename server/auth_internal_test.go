package server

import (
	"sync"
	"testing"

	"github.com/romana/romana/api"
)

// TestAuthzRevocationReload: reloading the revoked set (after a broken watch)
// never lets a revoked serial through, not even for a moment, and ends the
// open streams of serials that it revokes.
func TestAuthzRevocationReload(t *testing.T) {
	v := newRevocations()
	v.set("a", api.CertRecord{Serial: "a"}, true)
	stream, unregister := v.stream("b")
	defer unregister()

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var leaked int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, ok := v.get("a"); !ok {
				leaked++
			}
		}
	}()
	for range 2000 {
		v.replace(map[string]api.CertRecord{"a": {Serial: "a"}})
	}
	close(stop)
	wg.Wait()
	if leaked > 0 {
		t.Errorf("revoked serial a was not revoked %d times during reloads", leaked)
	}

	select {
	case <-stream:
		t.Fatal("stream of b ended before b was revoked")
	default:
	}
	v.replace(map[string]api.CertRecord{"a": {Serial: "a"}, "b": {Serial: "b"}})
	select {
	case <-stream:
	default:
		t.Error("reload revoking b left b's stream open")
	}
	v.replace(map[string]api.CertRecord{})
	if _, ok := v.get("a"); ok {
		t.Error("a reload without a still revokes it (its record was deleted)")
	}
}

package kubenode

import (
	"errors"
	"maps"
	"os"
	"testing"
)

// TestDiffering: only the settings whose value differs (whitespace aside)
// are bound over; a setting that cannot be read is an error, not a
// silent skip.
func TestDiffering(t *testing.T) {
	machine := map[string]string{
		"vm/overcommit_memory":      "0\n",
		"vm/panic_on_oom":           "0\n",
		"kernel/panic":              "1\n",
		"kernel/panic_on_oops":      "1\n",
		"kernel/keys/root_maxkeys":  "1000000\n",
		"kernel/keys/root_maxbytes": "25000000\n",
	}
	read := func(key string) (string, error) {
		v, ok := machine[key]
		if !ok {
			return "", os.ErrNotExist
		}
		return v, nil
	}
	got, err := differing(kubeletKernel, read)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"vm/overcommit_memory": "1", "kernel/panic": "10"}
	if !maps.Equal(got, want) {
		t.Errorf("differing = %v, want %v", got, want)
	}
	delete(machine, "kernel/panic")
	if _, err := differing(kubeletKernel, read); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing setting: %v", err)
	}
}

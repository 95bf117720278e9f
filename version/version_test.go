package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v9.8.7"
	s := String()
	if !strings.HasPrefix(s, "v9.8.7") || !strings.HasSuffix(s, " "+runtime.Version()) {
		t.Errorf("String() = %q, want v9.8.7 ... %s", s, runtime.Version())
	}
}

package cmdline

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestAgentJoinFile: --join-file gives the token when neither --join nor
// the environment does; a missing file is no token (a node without a key
// in the Secret, or a node that joined long ago).
func TestAgentJoinFile(t *testing.T) {
	t.Setenv(EnvJoinToken, "")
	dir := t.TempDir()
	file := filepath.Join(dir, "node-a")
	if err := os.WriteFile(file, []byte("rmn1.fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got Agent
	run := func(_ context.Context, f *Agent) error { got = *f; return nil }
	for _, c := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--join-file", file}, "", "rmn1.fromfile"},
		{[]string{"--join-file", filepath.Join(dir, "node-b")}, "", ""},
		{[]string{"--join-file", file, "--join", "rmn1.flag"}, "", "rmn1.flag"},
		{[]string{"--join-file", file}, "rmn1.env", "rmn1.env"},
	} {
		t.Setenv(EnvJoinToken, c.env)
		got = Agent{}
		if err := Execute(context.Background(), NewAgent(run), c.args, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got.Join != c.want {
			t.Errorf("%v (env %q): join %q, want %q", c.args, c.env, got.Join, c.want)
		}
	}
	// A file that cannot be read (a directory) is an error, not "no token".
	t.Setenv(EnvJoinToken, "")
	if err := Execute(context.Background(), NewAgent(run), []string{"--join-file", dir}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("--join-file naming a directory was accepted")
	}
}

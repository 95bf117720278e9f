// Package version is the version of Romana's binaries: "dev" in a plain
// build, set at link time for a release:
//
//	go build -ldflags "-X github.com/romana/romana/version.Version=v1.2.3" ./cmd/...
//
// The agent reports it to romanad (`romana status`).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release, overridden with -ldflags -X; "dev" otherwise.
var Version = "dev"

// String is Version with the VCS revision the binary was built from, when
// the Go toolchain recorded one, and the Go version: "dev (a1b2c3d4e5f6,
// modified) go1.26.0".
func String() string {
	s := Version
	if info, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, kv := range info.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.modified":
				if kv.Value == "true" {
					dirty = ", modified"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			s += fmt.Sprintf(" (%s%s)", rev, dirty)
		}
	}
	return s + " " + runtime.Version()
}

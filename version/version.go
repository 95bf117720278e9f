// Package version is the version of Romana's binaries, stamped at build
// time by the Makefile:
//
//	go build -ldflags "-X github.com/romana/romana/version.Version=$(git describe --tags --always --dirty) ..."
//
// A build without the stamp (go build, go run, go test) says "dev".
package version

// Stamped with -ldflags -X at build time.
var (
	Version = "dev" // git describe --tags --always --dirty
	Commit  = ""    // full commit hash
	Date    = ""    // commit date, RFC 3339
)

// String is the version with its commit and date when known, e.g.
// "v0.3.0-12-g1a2b3c4-dirty (commit 1a2b3c4d..., 2026-08-01T10:00:00Z)".
func String() string {
	s := Version
	switch {
	case Commit != "" && Date != "":
		s += " (commit " + Commit + ", " + Date + ")"
	case Commit != "":
		s += " (commit " + Commit + ")"
	case Date != "":
		s += " (" + Date + ")"
	}
	return s
}

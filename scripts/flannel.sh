#!/usr/bin/env bash
# scripts/flannel.sh: builds the real flannel daemon (flanneld) from Go
# modules (no binary download) and caches it outside the repository, keyed by
# version; prints the binary's path on its last line of stdout. `make bench`
# (part dataplane, docs/benchmarks.md "Dataplane against peers") runs it.
#
#   FLANNEL_VERSION  flannel release to build   (default v0.28.10)
#   TOOLS            cache directory            (default ~/.cache/romana-tools)
#
# The binary lands in $TOOLS/flannel-$FLANNEL_VERSION/flanneld. When it is
# there already the script does nothing else. Otherwise it makes a throwaway
# module that requires github.com/flannel-io/flannel@$FLANNEL_VERSION, copies
# flannel's main package (main.go) into it without the tencentvpc backend's
# import (its SDK module is refused by this machine's module proxy; every
# other backend, vxlan and host-gw among them, stays) and builds it with the
# version stamped. Concurrent runs wait for each other (flock) instead of
# building twice.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
export GOWORK=off  # the throwaway module stands alone

FLANNEL_VERSION=${FLANNEL_VERSION:-v0.28.10}
TOOLS=${TOOLS:-$HOME/.cache/romana-tools}
dir=$TOOLS/flannel-$FLANNEL_VERSION
bin=$dir/flanneld

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
case $FLANNEL_VERSION in
  v0.*.*) ;;
  *) echo "flannel.sh: FLANNEL_VERSION $FLANNEL_VERSION is not v0.X.Y" >&2; exit 2 ;;
esac

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/flannel-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "flannel.sh: building flanneld $FLANNEL_VERSION into $bin" >&2
cd "$work"
go mod init romana.local/flannel-build >/dev/null 2>&1
src=$(go mod download -json "github.com/flannel-io/flannel@$FLANNEL_VERSION" | awk -F'"' '$2 == "Dir" { print $4 }')
go mod edit -require="github.com/flannel-io/flannel@$FLANNEL_VERSION"
grep -v '"github.com/flannel-io/flannel/pkg/backend/tencentvpc"' "$src/main.go" > main.go
go mod tidy >&2
go build -ldflags "-X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
  -o "$dir/flanneld.tmp" .
"$dir/flanneld.tmp" --version >&2
mv "$dir/flanneld.tmp" "$bin"
echo "flannel.sh: built flanneld $FLANNEL_VERSION in $(( $(date +%s) - start )) s" >&2
echo "$bin"

#!/usr/bin/env bash
# scripts/kube-apiserver.sh: builds a real kube-apiserver from Go modules
# (no binary download) and caches it outside the repository, keyed by
# version; prints the binary's path on its last line of stdout.
#
#   KUBE_VERSION  Kubernetes release to build      (default v1.36.3)
#   TOOLS         cache directory                  (default ~/.cache/romana-tools)
#
# The binary lands in $TOOLS/kube-apiserver-$KUBE_VERSION/kube-apiserver.
# When it is there already the script does nothing else (instant). Otherwise
# it makes a throwaway module that requires k8s.io/kubernetes@$KUBE_VERSION
# and maps each k8s.io staging module (the `=> ./staging/...` replace lines of
# kubernetes' own go.mod) to its published v0.X.Y, then builds
# k8s.io/kubernetes/cmd/kube-apiserver with the version stamped. It needs
# only Go and the module proxy; the first build takes about 10 minutes on 2
# cores and 2.3 GB of memory, and uses the shared default module and build
# caches so later builds (other versions, kubelet) reuse them. Concurrent
# runs wait for each other (flock) instead of building twice.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
export GOWORK=off  # the throwaway module stands alone

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
TOOLS=${TOOLS:-$HOME/.cache/romana-tools}
dir=$TOOLS/kube-apiserver-$KUBE_VERSION
bin=$dir/kube-apiserver

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

. "$(dirname "$0")/kube-module.sh"
kube_version kube-apiserver.sh

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$bin" ]; then  # another run built it while we waited
  echo "$bin"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-apiserver-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "kube-apiserver.sh: building kube-apiserver $KUBE_VERSION into $bin (about 10 minutes on 2 cores the first time)" >&2

cd "$work"
kube_module kube-apiserver.sh
go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2

go build -ldflags "$kube_ldflags" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
"$dir/kube-apiserver.tmp" --version >&2
mv "$dir/kube-apiserver.tmp" "$bin"  # atomic: a half-written binary is never at $bin
echo "kube-apiserver.sh: built kube-apiserver $KUBE_VERSION in $(( $(date +%s) - start )) s" >&2
echo "$bin"

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

case $KUBE_VERSION in
  v1.*.*) ;;
  *) echo "kube-apiserver.sh: KUBE_VERSION $KUBE_VERSION is not v1.X.Y" >&2; exit 2 ;;
esac
rest=${KUBE_VERSION#v1.}
minor=${rest%%.*}
staging=v0.$rest  # k8s.io/api etc. are published as v0.X.Y for Kubernetes v1.X.Y

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
go mod init romana.local/kube-apiserver-build >/dev/null 2>&1
# Kubernetes' go.mod: the staging modules are the ones it replaces with
# ./staging/src/k8s.io/<name>; outside its repository they must point at
# their published versions instead.
kmod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | awk -F'"' '$2 == "GoMod" { print $4 }')
if [ ! -f "$kmod" ]; then
  echo "kube-apiserver.sh: go mod download k8s.io/kubernetes@$KUBE_VERSION gave no go.mod" >&2
  exit 1
fi
mods=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$kmod" | sort -u)
if [ -z "$mods" ]; then
  echo "kube-apiserver.sh: no staging replace lines in $kmod" >&2
  exit 1
fi
args=()
for m in $mods; do
  args+=("-replace=$m=$m@$staging")
done
go mod edit "${args[@]}"
echo "kube-apiserver.sh: $(echo "$mods" | wc -l) staging modules replaced by $staging" >&2
go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2

vpkg=k8s.io/component-base/version
ldflags="-X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
ldflags="$ldflags -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
go build -ldflags "$ldflags" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
"$dir/kube-apiserver.tmp" --version >&2
mv "$dir/kube-apiserver.tmp" "$bin"  # atomic: a half-written binary is never at $bin
echo "kube-apiserver.sh: built kube-apiserver $KUBE_VERSION in $(( $(date +%s) - start )) s" >&2
echo "$bin"

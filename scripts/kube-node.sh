#!/usr/bin/env bash
# scripts/kube-node.sh: builds the rest of a real Kubernetes cluster from Go
# modules (no binary download) and caches it outside the repository, keyed by
# version; prints the cache directory on its last line of stdout.
#
#   KUBE_VERSION  Kubernetes release to build      (default v1.36.3)
#   TOOLS         cache directory                  (default ~/.cache/romana-tools)
#
# Into $TOOLS/kube-node-$KUBE_VERSION/ it builds kubelet, kube-scheduler,
# kube-controller-manager, kube-proxy and kubectl in one `go build` (they share most of
# their compile work, and the module and build caches of scripts/kube-apiserver.sh),
# then agnhost (k8s.io/kubernetes/test/images/agnhost, the upstream e2e test
# image's binary) statically (CGO_ENABLED=0), because it goes into an image
# with no libc. The recipe is kube-apiserver.sh's: a throwaway module that
# requires k8s.io/kubernetes@$KUBE_VERSION with each staging module replaced by
# its published v0.X.Y. When every binary is there the script does nothing
# else (instant); when some are missing it builds only those (kubectl alone,
# added later, took 14 s with the build cache warm from the others). The first build, with kube-apiserver's cached, took 197 s
# for the four and 813 s for agnhost (its dependencies compiled again
# without cgo) on 2 cores busy with other builds (load average about 20):
# count on about 15 minutes. Concurrent runs wait for each other (flock).
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
export GOWORK=off

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
TOOLS=${TOOLS:-$HOME/.cache/romana-tools}
dir=$TOOLS/kube-node-$KUBE_VERSION
bins=(kubelet kube-scheduler kube-controller-manager kube-proxy kubectl)

# missing lists the binaries not built yet.
missing() {
  for b in "${bins[@]}" agnhost; do
    [ -x "$dir/$b" ] || echo "$b"
  done
}
if [ -z "$(missing)" ]; then
  echo "$dir"
  exit 0
fi

. "$(dirname "$0")/kube-module.sh"
kube_version kube-node.sh

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
todo=$(missing)
if [ -z "$todo" ]; then
  echo "$dir"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-node-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "kube-node.sh: building" $todo "$KUBE_VERSION into $dir (all of them: about 15 minutes on 2 cores the first time)" >&2

cd "$work"
kube_module kube-node.sh
pkgs=() built=()
for b in "${bins[@]}"; do
  case " $(echo $todo) " in *" $b "*) pkgs+=("k8s.io/kubernetes/cmd/$b") built+=("$b") ;; esac
done
agnhost=k8s.io/kubernetes/test/images/agnhost
case " $(echo $todo) " in *" agnhost "*) want_agnhost=1 ;; *) want_agnhost= ;; esac
for p in "${pkgs[@]}" ${want_agnhost:+"$agnhost"}; do
  go get "$p@$KUBE_VERSION" >&2
done

mkdir -p "$work/out"
if [ ${#pkgs[@]} -gt 0 ]; then
  go build -ldflags "$kube_ldflags" -o "$work/out/" "${pkgs[@]}"
  echo "kube-node.sh: built ${built[*]} in $(( $(date +%s) - start )) s" >&2
  case ${built[0]} in
    kubectl) "$work/out/kubectl" version --client >&2 ;;
    *) "$work/out/${built[0]}" --version >&2 ;;
  esac
fi
if [ -n "$want_agnhost" ]; then
  astart=$(date +%s)
  CGO_ENABLED=0 go build -ldflags "$kube_ldflags" -o "$work/out/agnhost" "$agnhost"
  echo "kube-node.sh: built agnhost (static) in $(( $(date +%s) - astart )) s" >&2
  built+=(agnhost)
fi
for b in "${built[@]}"; do
  mv "$work/out/$b" "$dir/$b.tmp"
  mv "$dir/$b.tmp" "$dir/$b"  # atomic: a half-written binary is never at $dir/$b
done
echo "kube-node.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$dir"

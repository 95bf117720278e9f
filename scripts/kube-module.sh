# scripts/kube-module.sh: the recipe scripts/kube-apiserver.sh and
# scripts/kube-node.sh share to build Kubernetes binaries from Go modules.
# Sourced, not run.
#
# kube_version PROG checks KUBE_VERSION (v1.X.Y) and sets kube_staging (the
# v0.X.Y that k8s.io/api and the other staging modules are published as)
# and kube_ldflags (the version stamp of k8s.io/component-base/version).
#
# kube_module PROG makes the current, empty directory a throwaway module
# whose staging modules (the `=> ./staging/...` replace lines of
# k8s.io/kubernetes' own go.mod) point at their published $kube_staging.

kube_version() {
  case $KUBE_VERSION in
    v1.*.*) ;;
    *) echo "$1: KUBE_VERSION $KUBE_VERSION is not v1.X.Y" >&2; exit 2 ;;
  esac
  local rest=${KUBE_VERSION#v1.}
  local minor=${rest%%.*}
  kube_staging=v0.$rest
  local vpkg=k8s.io/component-base/version
  kube_ldflags="-X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
  kube_ldflags="$kube_ldflags -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
}

kube_module() {
  go mod init "romana.local/$1-build" >/dev/null 2>&1
  local kmod mods m
  kmod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | awk -F'"' '$2 == "GoMod" { print $4 }')
  if [ ! -f "$kmod" ]; then
    echo "$1: go mod download k8s.io/kubernetes@$KUBE_VERSION gave no go.mod" >&2
    exit 1
  fi
  mods=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$kmod" | sort -u)
  if [ -z "$mods" ]; then
    echo "$1: no staging replace lines in $kmod" >&2
    exit 1
  fi
  local args=()
  for m in $mods; do
    args+=("-replace=$m=$m@$kube_staging")
  done
  go mod edit "${args[@]}"
  echo "$1: $(echo "$mods" | wc -l) staging modules replaced by $kube_staging" >&2
}

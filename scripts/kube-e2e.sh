#!/usr/bin/env bash
# scripts/kube-e2e.sh: builds Kubernetes' end-to-end test binary (e2e.test,
# k8s.io/kubernetes/test/e2e) and kubectl from Go modules (no binary
# download) and caches them outside the repository, keyed by version; prints
# the cache directory on its last line of stdout.
#
#   KUBE_VERSION  Kubernetes release to build      (default v1.36.3)
#   NPAPI_VERSION sigs.k8s.io/network-policy-api   (default v0.3.0, go.mod's)
#   TOOLS         cache directory                  (default ~/.cache/romana-tools)
#
# Into $TOOLS/kube-e2e-$KUBE_VERSION/ it builds e2e.test (`go test -c` of
# k8s.io/kubernetes/test/e2e, which links every e2e suite, among them
# test/e2e/network/netpol that make conformance runs) and kubectl (the e2e
# framework runs `kubectl exec` into agnhost pods). kubectl is built here
# rather than taken from scripts/kube-node.sh so that make conformance does
# not depend on that script's list. The recipe is scripts/kube-module.sh's: a
# throwaway module that requires k8s.io/kubernetes@$KUBE_VERSION with each
# staging module replaced by its published v0.X.Y. When both binaries are
# there the script does nothing else (instant). It says when it is building
# and how long that took. Concurrent runs wait for each other (flock).
#
# Into $TOOLS/network-policy-api-$NPAPI_VERSION/ it builds conformance.test
# (`go test -c` of sigs.k8s.io/network-policy-api/conformance, the
# ClusterNetworkPolicy conformance suite, with its manifests embedded), in a
# throwaway module that requires only that module, so its dependencies are
# the ones upstream tests with and Romana's go.mod is untouched; with one
# addition (see below): $NPAPI_SKIP_SCTP_PROBES, for kernels without SCTP.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
export GOWORK=off

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
NPAPI_VERSION=${NPAPI_VERSION:-v0.3.0}
TOOLS=${TOOLS:-$HOME/.cache/romana-tools}
dir=$TOOLS/kube-e2e-$KUBE_VERSION
npdir=$TOOLS/network-policy-api-$NPAPI_VERSION

# The ClusterNetworkPolicy conformance suite: small, built first.
if [ ! -x "$npdir/conformance.test" ]; then
  mkdir -p "$npdir"
  (
    flock 8
    if [ -x "$npdir/conformance.test" ]; then exit 0; fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/npapi-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    start=$(date +%s)
    echo "kube-e2e.sh: building the network-policy-api $NPAPI_VERSION conformance suite into $npdir" >&2
    cd "$work"
    go mod init romana.local/npapi-conformance-build >/dev/null 2>&1
    pkg=sigs.k8s.io/network-policy-api/conformance
    go get -t "$pkg@$NPAPI_VERSION" >&2
    # One change to the module's source (a copy, used by a replace line):
    # PokeServer (each probe of the suite) first checks
    # $NPAPI_SKIP_SCTP_PROBES and, when it is set, logs an SCTP probe as not
    # made instead of making it. Unset, the suite is upstream's. Many cases mix SCTP probes with TCP and UDP
    # ones, and on a kernel without SCTP the first SCTP probe would end the
    # case before its TCP and UDP probes ran.
    cp -r "$(go list -m -f '{{.Dir}}' sigs.k8s.io/network-policy-api)" npapi
    chmod -R u+w npapi
    src=npapi/conformance/utils/kubernetes
    sed -i 's/^func PokeServer(/func pokeServerUpstream(/' "$src/helper.go"
    if [ "$(grep -c '^func pokeServerUpstream(' "$src/helper.go")" != 1 ]; then
      echo "kube-e2e.sh: no func PokeServer in $src/helper.go to wrap" >&2
      exit 1
    fi
    go mod edit -replace=sigs.k8s.io/network-policy-api=./npapi
    cat >"$src/pokesctp.go" <<'GO'
package kubernetes

import (
	"os"
	"testing"

	k8sclient "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"sigs.k8s.io/network-policy-api/conformance/utils/config"
)

// PokeServer is upstream's, except that with $NPAPI_SKIP_SCTP_PROBES set an
// SCTP probe is logged and not made (added by Romana's scripts/kube-e2e.sh).
func PokeServer(t *testing.T, client k8sclient.Interface, kubeConfig *rest.Config, clientNamespace, clientPod, protocol, targetHost string, targetPort int32, timeoutConfig config.TimeoutConfig, shouldConnect bool) {
	if protocol == "sctp" && os.Getenv("NPAPI_SKIP_SCTP_PROBES") != "" {
		t.Logf("SKIPPED SCTP probe from %s/%s to %s:%d (expected to connect: %v): $NPAPI_SKIP_SCTP_PROBES is set", clientNamespace, clientPod, targetHost, targetPort, shouldConnect)
		return
	}
	pokeServerUpstream(t, client, kubeConfig, clientNamespace, clientPod, protocol, targetHost, targetPort, timeoutConfig, shouldConnect)
}
GO
    go test -c -o "$npdir/conformance.test.tmp" "$pkg"
    mv "$npdir/conformance.test.tmp" "$npdir/conformance.test"
    echo "kube-e2e.sh: built conformance.test in $(( $(date +%s) - start )) s" >&2
  ) 8>"$npdir/.lock"
fi

have() {
  [ -x "$dir/e2e.test" ] && [ -x "$dir/kubectl" ]
}
if have; then
  echo "$dir"
  exit 0
fi

. "$(dirname "$0")/kube-module.sh"
kube_version kube-e2e.sh

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if have; then
  echo "$dir"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-e2e-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "kube-e2e.sh: building e2e.test and kubectl $KUBE_VERSION into $dir (20 minutes or more on 2 cores the first time)" >&2

cd "$work"
kube_module kube-e2e.sh
e2e=k8s.io/kubernetes/test/e2e
kubectl=k8s.io/kubernetes/cmd/kubectl
# -t: go test -c needs the test-only dependencies of test/e2e in go.sum too.
go get -t "$e2e@$KUBE_VERSION" >&2
go get "$kubectl@$KUBE_VERSION" >&2

mkdir -p "$work/out"
go build -ldflags "$kube_ldflags" -o "$work/out/kubectl" "$kubectl"
echo "kube-e2e.sh: built kubectl in $(( $(date +%s) - start )) s" >&2
estart=$(date +%s)
go test -c -ldflags "$kube_ldflags" -o "$work/out/e2e.test" "$e2e"
echo "kube-e2e.sh: built e2e.test in $(( $(date +%s) - estart )) s" >&2
"$work/out/kubectl" version --client >&2
for b in kubectl e2e.test; do
  mv "$work/out/$b" "$dir/$b.tmp"
  mv "$dir/$b.tmp" "$dir/$b"  # atomic: a half-written binary is never at $dir/$b
done
echo "kube-e2e.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$dir"

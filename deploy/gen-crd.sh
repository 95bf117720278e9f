#!/bin/sh
# Copies the ClusterNetworkPolicy CRD of sigs.k8s.io/network-policy-api, at
# the version go.mod requires, into deploy/kubernetes/ unchanged, so that
# `kubectl apply -f deploy/kubernetes/` installs it. deploy's
# TestCRDMatchesModule fails when the copy and the module differ: run this
# after changing the module's version in go.mod.
set -eu
cd "$(dirname "$0")/.."
dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/network-policy-api)
cp "$dir/config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml" \
  deploy/kubernetes/01-policy.networking.k8s.io_clusternetworkpolicies.yaml
chmod 0644 deploy/kubernetes/01-policy.networking.k8s.io_clusternetworkpolicies.yaml

// Package conformance is the support of `make conformance`, which runs
// upstream suites against real nodes (package kubenode): Kubernetes'
// NetworkPolicy e2e (test/e2e/network/netpol, the e2e.test binary) and the
// ClusterNetworkPolicy conformance suite of sigs.k8s.io/network-policy-api.
// It holds the proxy that lets the apiserver reach kubelets inside host
// namespaces (KubeletProxy), the parsers of both suites' reports into one
// list of cases (ParseGinkgo, ParseGoTest) and their rendering as the
// results block of docs/conformance.md (Render). The parsers and Render
// are pure; KubeletProxy is a thin adapter. It is test support: import it
// only from _test.go files.
package conformance

# Romana: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
BIN := $(CURDIR)/bin
# How much each fuzz target runs inside `make test`: an execution count, not
# a duration, because Go 1.26's fuzz coordinator can fail a duration-bounded
# run with a spurious "context deadline exceeded" at the deadline
# (golang/go#75804); a count has no deadline to race.
FUZZTIME ?= 10000x
BENCHTIME ?= 1x
# --version of every binary (package version), from git; "dev" outside git.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE ?= $(shell git log -1 --format=%cI 2>/dev/null)
VPKG := github.com/romana/romana/version
LDFLAGS := -X '$(VPKG).Version=$(VERSION)' -X '$(VPKG).Commit=$(COMMIT)' -X '$(VPKG).Date=$(DATE)'

.PHONY: all deps build test tidy docs docs-check unit fuzz demo demo-kubernetes bench bench-go bench-scale bench-kube faults clean install deb deb-test nfpm kube-apiserver kube-node images images-test conformance

all: build

deps:
	@./scripts/install-deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ $$($(GO) list ./cmd/... | grep -v /cmd/gendocs)

test: deps build tidy docs-check kube-apiserver kube-node
	$(GO) vet ./...
	ROMANA_BIN=$(BIN) ROMANA_KUBE_APISERVER=$(KUBE_APISERVER) ROMANA_KUBE_NODE=$(KUBE_NODE) $(GO) test -count=1 -timeout 20m ./...
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory deb-test

# A real kube-apiserver for the Kubernetes tests (package kubetest), built
# from Go modules by scripts/kube-apiserver.sh into $(TOOLS), outside the
# repository, keyed by version: about 10 minutes on 2 cores the first time,
# instant once cached (docs/contributing.md, "A real kube-apiserver").
KUBE_VERSION ?= v1.36.3
KUBE_APISERVER = $(TOOLS)/kube-apiserver-$(KUBE_VERSION)/kube-apiserver
kube-apiserver:
	@KUBE_VERSION=$(KUBE_VERSION) TOOLS=$(TOOLS) ./scripts/kube-apiserver.sh >/dev/null

# The rest of a real cluster for the node tests (package kubenode) and
# demo-kubernetes: kubelet, kube-scheduler, kube-controller-manager,
# kube-proxy, kubectl and the agnhost test image's binary, built from Go modules by scripts/kube-node.sh into
# $(TOOLS)/kube-node-$(KUBE_VERSION): about 15 minutes on 2 cores once
# kube-apiserver is cached, instant afterwards (docs/contributing.md,
# "Real nodes in tests").
KUBE_NODE = $(TOOLS)/kube-node-$(KUBE_VERSION)
kube-node:
	@KUBE_VERSION=$(KUBE_VERSION) TOOLS=$(TOOLS) ./scripts/kube-node.sh >/dev/null

# Upstream NetworkPolicy suites against a real cluster of nodes (package
# kubenode): Kubernetes' NetworkPolicy e2e (e2e.test) and the
# ClusterNetworkPolicy conformance suite of sigs.k8s.io/network-policy-api,
# built from Go modules by scripts/kube-e2e.sh into $(TOOLS) (a few minutes
# the first time with kube-apiserver's build cache, instant afterwards).
# Rewrites the results block of docs/conformance.md; fails when a case
# failed. Not part of make test: about 20-30 minutes on 2 cores.
KUBE_E2E = $(TOOLS)/kube-e2e-$(KUBE_VERSION)
NPAPI_VERSION = $(shell $(GO) list -m -f '{{.Version}}' sigs.k8s.io/network-policy-api)
CONFORMANCE_OUT ?= $(or $(TMPDIR),/tmp)/romana-conformance
conformance: deps build kube-apiserver kube-node
	@KUBE_VERSION=$(KUBE_VERSION) NPAPI_VERSION=$(NPAPI_VERSION) TOOLS=$(TOOLS) ./scripts/kube-e2e.sh >/dev/null
	ROMANA_BIN=$(BIN) ROMANA_KUBE_APISERVER=$(KUBE_APISERVER) ROMANA_KUBE_NODE=$(KUBE_NODE) \
	  ROMANA_KUBE_E2E=$(KUBE_E2E) ROMANA_NPAPI_CONFORMANCE=$(TOOLS)/network-policy-api-$(NPAPI_VERSION) \
	  ROMANA_CONFORMANCE_DOC=$(CURDIR)/docs/conformance.md ROMANA_CONFORMANCE_OUT=$(CONFORMANCE_OUT) \
	  $(GO) test -tags conformance -count=1 -timeout 3h -run '^TestConformance$$' -v ./cmd/romana-agent

# go.mod and go.sum must be what `go mod tidy` makes of them: fails, printing
# the difference, when they are not (run `go mod tidy` and commit the result).
tidy:
	$(GO) mod tidy -diff

# docs/cli/*.md and docs/man/*.1 are generated from the commands' help
# (cmd/gendocs): after changing a command, its flags or its help, run
# `make docs` and commit the result.
docs:
	$(GO) run ./cmd/gendocs -out docs

# Fails, printing the difference, when docs/cli or docs/man are not what
# `make docs` would write.
docs-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(GO) run ./cmd/gendocs -out $$tmp; \
	diff -ru docs/cli $$tmp/cli && diff -ru docs/man $$tmp/man || \
	  { echo "docs/cli or docs/man are stale: run make docs and commit them" >&2; exit 1; }

# Each fuzz target runs briefly; longer runs: make fuzz FUZZTIME=5m
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f $$out' EXIT; \
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$out 2>&1 || { cat $$out; exit 1; }; \
	  done; \
	done

demo: deps build
	$(BIN)/romana demo

# A real Kubernetes cluster on this machine (docs/kubernetes.md, "A cluster
# on one machine"): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and 3 nodes (containerd + kubelet + kube-proxy in nftables
# mode, each in a network namespace), Romana installed by kubectl apply of
# deploy/kubernetes with the images of `make images IMAGE_TAG=dev`, an app,
# a NetworkPolicy and the connectivity matrix before and after; everything
# torn down at the end, on failure and on Ctrl-C. Root; the first run builds
# the Kubernetes binaries from Go modules (about 25 minutes on 2 cores, said
# as it starts), later ones take 2 to 4 minutes.
KDEMO_IMAGES ?= $(DEBDIR)/kdemo-images
demo-kubernetes: deps build kube-apiserver kube-node
	@$(MAKE) --no-print-directory images IMAGE_TAG=dev IMAGEDIR=$(KDEMO_IMAGES) >/dev/null
	$(GO) build -o $(BIN)/kubedemo ./demo/kubedemo
	@before=$$(ls /run/containerd/s 2>/dev/null | wc -l); \
	$(BIN)/kubedemo -images $(KDEMO_IMAGES) -manifests deploy/kubernetes -romana $(BIN)/romana; rc=$$?; \
	echo "/run/containerd/s: $$before entries before, $$(ls /run/containerd/s 2>/dev/null | wc -l) after (the nodes' shims keep theirs in the node's own /run)"; \
	exit $$rc

# The fault tests at full size (docs/reliability.md, "Faults survived"):
# 10,000 allocations through kills of an etcd member and of romanad,
# agent restarts and upgrade under traffic, drift, romanad down for 60 s.
# make test runs them too, except the 60 s one, with 500 allocations.
faults: deps build
	ROMANA_FAULTS=1 ROMANA_BIN=$(BIN) $(GO) test -count=1 -timeout 30m -run Faults -v ./server/ ./cmd/romana-agent/

# The benchmark suite (issue 14; docs/benchmarks.md): Romana against real
# peers and the no-rule routed path, side by side in one run, every figure a
# ratio to a baseline measured in the same run (A-B-B-A), absolute numbers
# printed, never asserted. Parts: dataplane (root; flannel built from Go
# modules by scripts/flannel.sh and cached in $(TOOLS)), control, scale.
# QUICK=1: a smoke run under 3 minutes; ONLY=part[,part]: some parts. Writes
# docs/bench/*.json, docs/bench/*.png and the generated blocks of
# docs/benchmarks.md; a summary of ratios on the terminal.
QUICK ?=
ONLY ?=
FLANNEL_VERSION ?= v0.28.10
bench: deps build
	ROMANA_BIN=$(BIN) TOOLS=$(TOOLS) FLANNEL_VERSION=$(FLANNEL_VERSION) $(GO) run ./bench/romana-bench run -flannel-version $(FLANNEL_VERSION) $(if $(QUICK),-quick) $(if $(ONLY),-only $(ONLY))

# Every Go benchmark of the repository, one iteration each (BENCHTIME).
bench-go: deps build
	ROMANA_BIN=$(BIN) $(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout 60m ./...

# Scale curves from the pure code (issue 14, item 3; docs/benchmarks.md,
# "Scale curves"): nft rules and elements per host, routes per host,
# top-of-rack and spine, compile time, beside the per-endpoint and
# per-block schemes, up to 100,000 endpoints and 10,000 tenants. Writes
# docs/bench/scale.json, docs/bench/*.png and the scale block of
# docs/benchmarks.md; no root, no network, seconds. `make bench ONLY=scale`
# runs the same.
bench-scale:
	$(GO) run ./bench/romana-bench scale -dir docs/bench -doc docs/benchmarks.md

# Kubernetes at scale on the real parts (issue 12; docs/benchmarks.md,
# "Kubernetes scale (issue 12)"): a kube-apiserver, romanad, romana-kube
# and 4 romana-agent processes in host namespaces; 1,000 pods, 100
# namespaces, 200 NetworkPolicies: nft rules and elements per host, pod
# and policy changes to the kernel (p50/p99), agent memory. Root; about
# 10 minutes. ROMANA_KUBE_SCALE_HOSTS and ROMANA_KUBE_SCALE_SAMPLES
# change the run.
bench-kube: deps build kube-apiserver
	ROMANA_KUBE_SCALE=1 ROMANA_BIN=$(BIN) ROMANA_KUBE_APISERVER=$(KUBE_APISERVER) $(GO) test -count=1 -timeout 40m -run '^TestKubernetesScale$$' -v ./cmd/romana-agent/

# Pod latency on real nodes (issue 13; docs/benchmarks.md, "Kubernetes on
# real nodes: pod latency (issue 13)"): the cluster of TestKubeNodesSmoke
# (kubelet, containerd and kube-proxy per host namespace, the real
# scheduler and controller-manager, romanad, romana-kube, the agents), 100
# pods: created → reachable and created → NetworkPolicy enforced, p50/p99,
# with real packets between pods across nodes. Root; a few minutes.
# ROMANA_KUBE_NODES_HOSTS (2 or 3), ROMANA_KUBE_NODES_PODS,
# ROMANA_KUBE_NODES_INTERVAL (between creations, default 200ms; 0: all at
# once) and ROMANA_KUBE_NODES_SELECT (label, default, or segment: how the
# NetworkPolicy selects the pods) change the run.
.PHONY: bench-kube-nodes
bench-kube-nodes: deps build kube-apiserver kube-node
	ROMANA_KUBE_NODES_BENCH=1 ROMANA_BIN=$(BIN) ROMANA_KUBE_APISERVER=$(KUBE_APISERVER) ROMANA_KUBE_NODE=$(KUBE_NODE) $(GO) test -count=1 -timeout 30m -run '^TestKubeNodesLatency$$' -v ./cmd/romana-agent/

# Install on a plain host (docs/install.md): binaries, the CNI plugin, the
# systemd units (ExecStart pointing into BINDIR) and example configs. An
# existing config in /etc/romana is never overwritten. DESTDIR installs into
# a staging root (packagers, tests).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
CNIBINDIR ?= /opt/cni/bin
EXAMPLEDIR ?= $(PREFIX)/share/doc/romana/examples
CONFDIR := /etc/romana

install: build
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(CNIBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(EXAMPLEDIR) $(DESTDIR)$(CONFDIR)
	install -m 0755 $(BIN)/romanad $(BIN)/romana-agent $(BIN)/romana $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BIN)/romana-cni $(DESTDIR)$(CNIBINDIR)/
	@for u in romanad romana-agent; do \
	  sed 's|@BINDIR@|$(BINDIR)|g' packaging/systemd/$$u.service.in >$(DESTDIR)$(UNITDIR)/$$u.service && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service && echo "installed $(DESTDIR)$(UNITDIR)/$$u.service"; \
	done
	install -m 0644 packaging/examples/* $(DESTDIR)$(EXAMPLEDIR)/
	@for c in romanad.yaml romana-agent.yaml; do \
	  if [ -e $(DESTDIR)$(CONFDIR)/$$c ]; then echo "kept existing $(DESTDIR)$(CONFDIR)/$$c (the new example is $(DESTDIR)$(EXAMPLEDIR)/$$c)"; \
	  else install -m 0644 packaging/examples/$$c $(DESTDIR)$(CONFDIR)/$$c && echo "installed $(DESTDIR)$(CONFDIR)/$$c"; fi; \
	done

# Debian packages romanad, romana-agent (with romana-cni) and romana into
# $(DEBDIR), built by nfpm (its CLI, built once from Go modules into
# $(TOOLS), outside the repository). Reproducible: the same commit gives the
# same .debs (SOURCE_DATE_EPOCH is the commit's time; static, trimmed
# binaries without build ids).
NFPM_VERSION := v2.45.2
TOOLS ?= $(HOME)/.cache/romana-tools
NFPM := $(TOOLS)/nfpm-$(NFPM_VERSION)/nfpm
DEBDIR ?= $(CURDIR)/dist
DEBSTAGE := $(DEBDIR)/.stage
DEB_ARCH ?= $(shell $(GO) env GOARCH)
DEB_VERSION ?= 0.0~git$(shell git log -1 --format=%cd --date=format:%Y%m%d).$(shell git rev-parse --short=12 HEAD)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct)
DEB_MAINTAINER ?= Romana developers <romana@localhost>
export SOURCE_DATE_EPOCH

nfpm: $(NFPM)
$(NFPM):
	GOBIN=$(dir $(NFPM)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

deb: $(NFPM)
	rm -rf $(DEBSTAGE) && mkdir -p $(DEBSTAGE)/bin $(DEBSTAGE)/systemd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w -buildid= $(LDFLAGS)" -o $(DEBSTAGE)/bin/ $$($(GO) list ./cmd/... | grep -v /cmd/gendocs)
	for u in romanad romana-agent; do sed 's|@BINDIR@|/usr/bin|g' packaging/systemd/$$u.service.in >$(DEBSTAGE)/systemd/$$u.service; done
	cp -r packaging/examples packaging/scripts LICENSE $(DEBSTAGE)/
	for p in romanad romana-agent romana; do \
	  rm -f $(DEBDIR)/$${p}_*.deb; \
	  (cd $(DEBSTAGE) && VERSION='$(DEB_VERSION)' DEB_ARCH='$(DEB_ARCH)' DEB_MAINTAINER='$(DEB_MAINTAINER)' \
	    $(NFPM) package --config $(CURDIR)/packaging/nfpm/$$p.yaml --packager deb --target $(DEBDIR)/) || exit 1; \
	done
	rm -rf $(DEBSTAGE)
	@ls -l $(DEBDIR)/*.deb

# Builds the .debs, installs them into a scratch root with dpkg --root,
# checks files, modes, conffiles and units, and runs romanad and an agent
# from the units' ExecStart lines in a network namespace of its own.
deb-test: deb
	ROMANA_DEBS=$(DEBDIR) $(GO) test -count=1 -v -run . ./packaging/

# Romana's container images for Kubernetes (deploy/kubernetes/README.md),
# written without Docker or a registry as OCI layout archives into
# $(IMAGEDIR): romanad.tar, romana-agent.tar (with romana-cni, its installer
# and the build machine's nft with its libraries), romana-kube.tar, and
# romana.yaml, the manifests naming $(IMAGE_REGISTRY)/NAME:$(IMAGE_TAG).
# Reproducible as the .debs are: static, trimmed binaries without build
# ids, every time stamp SOURCE_DATE_EPOCH. Import on a node with
# `ctr -n k8s.io images import $(IMAGEDIR)/romanad.tar` (and the others).
IMAGEDIR ?= $(DEBDIR)/images
IMAGE_TAG ?= $(VERSION)
IMAGE_REGISTRY ?= localhost/romana
IMAGESTAGE := $(IMAGEDIR)/.bin
images:
	rm -rf $(IMAGESTAGE) && mkdir -p $(IMAGESTAGE)
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags="-s -w -buildid= $(LDFLAGS)" -o $(IMAGESTAGE)/ \
	  ./cmd/romanad ./cmd/romana ./cmd/romana-agent ./cmd/romana-cni ./cmd/romana-kube
	$(GO) run ./deploy/romana-images -bin $(IMAGESTAGE) -out $(IMAGEDIR) -tag $(IMAGE_TAG) -registry $(IMAGE_REGISTRY) -epoch $(SOURCE_DATE_EPOCH)
	rm -rf $(IMAGESTAGE)

# Imports the images into a containerd of the test's own (ctr images
# import), checks their names and runs them: --version of each binary, nft
# in the agent's image, install-cni onto a temporary directory. Needs root,
# containerd, ctr and runc.
images-test: images
	ROMANA_IMAGES=$(IMAGEDIR) $(GO) test -count=1 -v -run TestContainerd ./deploy/

clean:
	rm -rf $(BIN) $(DEBDIR)

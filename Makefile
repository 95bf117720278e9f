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

.PHONY: all deps build test tidy docs docs-check unit fuzz demo bench faults clean

all: build

deps:
	@./scripts/install-deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ $$($(GO) list ./cmd/... | grep -v /cmd/gendocs)

test: deps build tidy docs-check
	$(GO) vet ./...
	ROMANA_BIN=$(BIN) $(GO) test -count=1 -timeout 20m ./...
	@$(MAKE) --no-print-directory fuzz

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

# The fault tests at full size (docs/reliability.md, "Faults survived"):
# 10,000 allocations through kills of an etcd member and of romanad,
# agent restarts and upgrade under traffic, drift, romanad down for 60 s.
# make test runs them too, except the 60 s one, with 500 allocations.
faults: deps build
	ROMANA_FAULTS=1 ROMANA_BIN=$(BIN) $(GO) test -count=1 -timeout 30m -run Faults -v ./server/ ./cmd/romana-agent/

bench: deps build
	ROMANA_BIN=$(BIN) $(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout 60m ./...

clean:
	rm -rf $(BIN)

# moat: `make test` installs what the tests need, then runs every check CI runs.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(shell go env GOPATH 2>/dev/null || echo $$HOME/go)/bin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build test deps lint unit demo clean toolchain

all: build

toolchain:
	@./scripts/install-go.sh

build: toolchain
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/moat ./cmd/moat

deps: toolchain
	@./scripts/test-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

unit:
	$(GO) test -race -count=1 -timeout 20m ./...
	@# Timing-bound acceptance tests once more at full speed.
	$(GO) test -count=1 -timeout 5m -run 'ThroughTheEdge|NotSerialised|Flood|Coalesc' ./internal/edge/ ./internal/cache/
	@# Tests that need what some machines lack say so here, with the reason.
	@$(GO) test -count=1 -timeout 5m -v -run 'FromTheJournal|JournalLive|JournalFile' ./internal/daemon/ ./internal/guard/ | grep -E -B1 '^--- SKIP' | grep -v '^--' || true

test: deps lint unit

demo: build
	./bin/moat serve --demo

clean:
	rm -rf bin

# consentry Makefile. Only Go and make are assumed; every other tool is built into bin/.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
OPA_VERSION := v1.22.2
OPA := $(BIN)/opa
# A vault on PATH is used as is; otherwise bin/vault is built once from the Go module.
VAULT ?= $(shell command -v vault 2>/dev/null || echo $(BIN)/vault)
# The PostgreSQL the multi-replica tests use (one variable; see docs/operations.md).
CONSENTRY_PG_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
GOTEST_FLAGS ?= -race -count=1 -timeout 30m
# This module builds on its own: a go.work in a parent directory (a checkout under a developer's
# workspace) must not change which modules it builds against.
export GOWORK := off
export VAULT CONSENTRY_PG_URL
export CONSENTRY_VAULT_BIN := $(VAULT)
export CONSENTRY_BIN := $(BIN)/consentry

.PHONY: all build test test-go test-rego vet lint bench demo vault opa postgres clean fmt

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/consentry ./cmd/consentry
	@if [ -d cmd/democrm ]; then $(GO) build -o $(BIN)/democrm ./cmd/democrm; fi

opa: $(OPA)
$(OPA):
	@mkdir -p $(BIN)
	@echo ">> installing opa $(OPA_VERSION) into bin/ (Go module proxy)"
	GOBIN=$(BIN) $(GO) install github.com/open-policy-agent/opa@$(OPA_VERSION)

# Real Vault server for tests and the demo, built from the Go module in its own nested module
# (deploy/vault/server). ~8 minutes and several GB of modules the first time; cached afterwards.
vault:
	@if [ -x "$(VAULT)" ]; then echo ">> vault: $(VAULT)"; else \
	  echo ">> building a real Vault server (v1.21.0) from the Go module into bin/vault - first time ~8 min"; \
	  mkdir -p $(BIN); set -o pipefail; cd deploy/vault/server && GOFLAGS=-mod=mod $(GO) build -v -o $(BIN)/vault.tmp . 2>&1 \
	    | awk '/^(go: |#|[a-z]+\.go:)/ {print; next} {n++; if (n % 20 == 0) {printf "\r   %d packages compiled", n; fflush()}} END {print ""}' \
	  && mv $(BIN)/vault.tmp $(BIN)/vault; fi

postgres:
	@bash .ci/ensure-postgres.sh

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './deploy/vault/server/*')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi

test-rego: $(OPA)
	$(OPA) test policies/consentry policies/data -s policies/schema --timeout 60s
	$(OPA) test policies/consentry policies/data -s policies/schema --timeout 60s --coverage --threshold 95 --format=json > $(BIN)/rego-coverage.json || { echo "rego coverage below 95% (see bin/rego-coverage.json)"; exit 1; }
	@$(GO) run ./cmd/consentry test policies

test-go: build vault postgres
	$(GO) test $(GOTEST_FLAGS) ./...

test: vet test-rego test-go

lint: $(OPA)
	$(GO) vet ./...
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@latest && $(BIN)/staticcheck ./...
	$(OPA) fmt --list --fail policies
	-GOBIN=$(BIN) $(GO) install github.com/open-policy-agent/regal@latest && $(BIN)/regal lint policies/consentry

fmt: $(OPA)
	gofmt -w $$(git ls-files '*.go')
	$(OPA) fmt -w policies

bench: build vault postgres
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./...

demo: build vault
	$(BIN)/consentry demo $(ARGS)

clean:
	rm -rf $(BIN)/consentry $(BIN)/democrm var/

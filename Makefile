# cvm — see README.md. Every target works as root on a fresh Debian 12
# machine: `make test` and `make demo` install what they need first.

SHELL   := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 10s
FUZZMINIMIZE ?= 5s
BENCHTIME ?= 2s
# Debian packages the tests and tools need.
APT_PACKAGES := protobuf-compiler acpica-tools qemu-system-x86 cryptsetup-bin e2fsprogs erofs-utils cpio xz-utils runc swtpm osslsigncode

PREFIX ?= /usr/local

.PHONY: all build install test test-vm test-inputs containerd-tools bench fuzz proto proto-check lint demo deps clean

all: build

## deps: install the Debian packages and Go tools the targets need (root)
deps:
	@command -v $(GO) >/dev/null || { echo "make: Go not found (expected /usr/local/go/bin/go)"; exit 1; }
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make: missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
		echo "installing:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@$(GO) mod download

## build: build the binaries into bin/
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## install: cvm, cvm-kbs, containerd-shim-cvm-v2 under PREFIX/bin; the guest agent and the default guest kernel under PREFIX/share/cvm (PREFIX=/usr/local)
install: build test-inputs
	@scripts/install.sh --bin $(BIN) $(PREFIX)

## test-inputs: fetch the large public test inputs (Debian OVMF; the Debian 12 and 13 cloud kernels and their module trees) into .cache/inputs, checked by SHA-256
test-inputs:
	@scripts/fetch-test-inputs.sh

## containerd-tools: build the pinned containerd 2.4 and 2.3, ctr and crictl into .cache/containerd (once; the shim's tests use them)
containerd-tools:
	@scripts/fetch-containerd.sh

## test: every test tier this machine supports, then a summary of what ran and what was skipped
test: deps test-inputs containerd-tools proto-check lint
	@$(GO) build -o $(BIN)/testreport ./internal/tools/testreport
	@set -o pipefail; $(GO) test -race -json -count=1 -timeout 30m ./... 2>&1 | $(BIN)/testreport

## test-vm: the VM tier alone: Debian 13 (6.12) and 12 (6.1) guests on our VMM (directly on hardware KVM, else in the QEMU TCG test host), the launch end to end (both engines), the shim in microVMs (both engines)
test-vm: deps test-inputs containerd-tools
	@$(GO) build -o $(BIN)/testreport ./internal/tools/testreport
	@set -o pipefail; $(GO) test -json -count=1 -timeout 30m ./vmm/vmtest/ ./launcher/ ./launcher/builtintest/ ./launcher/shim/vmtest/ ./launcher/shim/builtintest/ ./guest-agent/dmcrypt/ 2>&1 | $(BIN)/testreport

## bench: side-by-side ratios: verification vs signature bound, measurement vs hash bound, broker releases, launch split (build/boot/attest/unlock), our VMM vs QEMU microvm (boot, memory), disk encryption vs raw XTS
bench: test-inputs
	@$(GO) build -o $(BIN)/benchratio ./internal/tools/benchratio
	@set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 1 -timeout 60m ./... 2>&1 | $(BIN)/benchratio

## fuzz: run every fuzz target for FUZZTIME (default 10s) each
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg; \
		done; \
	done

# gRPC services (the key broker) and ttrpc services (the guest agent, which
# containerd's ttrpc also carries) get different service generators.
GRPC_PROTOS  := $(shell find proto -name '*.proto' -not -path 'proto/cvm/agent/*')
TTRPC_PROTOS := $(shell find proto/cvm/agent -name '*.proto')
PROTOC_PLUGINS = --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc \
	--plugin=protoc-gen-go-ttrpc=$(BIN)/protoc-gen-go-ttrpc
# protogen OUTDIR: generate every proto into OUTDIR
define protogen
	protoc $(PROTOC_PLUGINS) -I proto -I /usr/include \
		--go_out=$(1) --go_opt=module=github.com/greatjail/cvm \
		--go-grpc_out=$(1) --go-grpc_opt=module=github.com/greatjail/cvm $(GRPC_PROTOS) && \
	protoc $(PROTOC_PLUGINS) -I proto -I /usr/include \
		--go_out=$(1) --go_opt=module=github.com/greatjail/cvm \
		--go-ttrpc_out=$(1) --go-ttrpc_opt=module=github.com/greatjail/cvm $(TTRPC_PROTOS)
endef

.PHONY: proto-tools
proto-tools:
	@mkdir -p $(BIN)
	@$(GO) build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	@$(GO) build -o $(BIN)/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	@$(GO) build -o $(BIN)/protoc-gen-go-ttrpc github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc

## proto: regenerate the committed Go code from proto/
proto: deps proto-tools
	$(call protogen,.)

## proto-check: fail if the committed generated code differs from a fresh generation
proto-check: deps proto-tools
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(call protogen,$$tmp) && \
	for f in $$(cd $$tmp && find . -name '*.pb.go'); do \
		cmp -s $$tmp/$$f $$f || { echo "proto-check: $$f is stale: run 'make proto' and commit"; exit 1; }; \
	done; \
	for f in $$(find proto -name '*.pb.go'); do \
		[ -f $$tmp/$$f ] || { echo "proto-check: $$f has no .proto source"; exit 1; }; \
	done; echo "proto-check: generated code is current"

## lint: go vet and staticcheck
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## demo: a key broker on loopback, an encrypted disk, a measured launch under the simulated TEE, the program's output and the broker's decision
demo: deps build test-inputs
	@scripts/demo.sh $(BIN)/cvm $(BIN)/cvm-kbs

clean:
	rm -rf $(BIN) .demo

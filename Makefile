# intact: `make test` is the one command that runs every test tier. It
# installs what the tests need (Debian packages, Go tools), so a fresh Debian
# machine (as root) needs nothing by hand.

GO            ?= go
BIN           := bin
GOBIN         := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2
FUZZTIME      ?= 5s
export STATICCHECK_VERSION

.PHONY: all build deps lint test test-unit test-fuzz test-vm test-quickstart bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	scripts/install-deps

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

# Unit and host-privileged tiers. INTACT_TEST_STRICT=1 turns a missing tool
# or privilege into a failure instead of a skip.
test-unit: deps build
	INTACT_TEST_STRICT=1 $(GO) test -count=1 -timeout 20m ./...

# Every fuzz target runs briefly on top of its committed corpus.
test-fuzz: deps
	FUZZTIME=$(FUZZTIME) scripts/fuzz

test: lint test-unit test-fuzz test-vm test-quickstart
	@echo "make test: all tiers passed"

# Benchmarks against the reference tools (scripts/bench runs every
# scripts/bench.d/* script; BENCH="verity layer" selects some).
bench: deps build
	INTACT=$(CURDIR)/$(BIN)/intact scripts/bench $(BENCH)

clean:
	rm -rf $(BIN)

# VM tier (internal/vmtest): packages whose tests need device-mapper,
# fs-verity, IPE or keyrings run inside Debian's kernel under QEMU.
# Host-side harness tests (negative controls, Secure Boot refusal) run on the
# host; every package with VM tests runs inside the guest through vmexec.
VM_PKGS  ?= dm loop keyring verity veritydev fsverity ipe internal/vmtest cmd/intact
VM_TOOLS ?= veritysetup,dmsetup,openssl,fsverity,mkfs.ext4,mkfs.erofs,keyctl,losetup,findmnt,mount,umount
VM_TIMING := $(BIN)/vm-timing.log
test-vm: deps build
	$(GO) build -o $(BIN)/vmexec ./internal/vmtest/cmd/vmexec
	@rm -f $(VM_TIMING); start=$$(date +%s); \
	INTACT_TEST_STRICT=1 INTACT_VM_HOST_TESTS=1 INTACT_VM_TIMING_LOG=$(CURDIR)/$(VM_TIMING) \
		$(GO) test -count=1 -timeout 20m ./internal/vmtest/ && \
	CGO_ENABLED=0 INTACT_TEST_STRICT=1 INTACT_VM_TIMING_LOG=$(CURDIR)/$(VM_TIMING) \
		$(GO) test -count=1 -p 1 -timeout 20m -exec "$(CURDIR)/$(BIN)/vmexec --mode secureboot --tool $(VM_TOOLS) --file $(CURDIR)/$(BIN)/intact:/usr/bin/intact --file $(CURDIR)/$(BIN)/intact-registry:/usr/bin/intact-registry" \
		$$(for d in $(VM_PKGS); do [ -d $$d ] && echo ./$$d/...; done); rc=$$?; \
	cat $(VM_TIMING) 2>/dev/null; echo "test-vm: $$(( $$(date +%s) - start ))s in total"; exit $$rc

# The README's main-job command, run end to end (offline; as root it also
# mounts the verified layers with the kernel's EROFS). bin/intact runs
# bin/intact-registry, which build puts next to it.
test-quickstart: build
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && $(BIN)/intact quickstart --dir "$$dir"

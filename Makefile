# intact: `make test` is the one command that runs every test tier. It
# installs what the tests need (Debian packages, Go tools), so a fresh Debian
# machine (as root) needs nothing by hand.

GO            ?= go
BIN           := bin
GOBIN         := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2
FUZZTIME      ?= 5s
export STATICCHECK_VERSION

.PHONY: all build deps lint test test-unit test-fuzz test-vm test-vm-containerd ctr-vm-run vmexec test-e2e e2e test-quickstart bench clean

all: build

# Static binaries: the VM tier carries them into a guest without libraries.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ ./cmd/intact-init  # PID 1 of an initramfs: small

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

TIERS := lint test-unit test-fuzz test-vm test-e2e test-quickstart
test:
	@total=$$(date +%s); for t in $(TIERS); do s=$$(date +%s); \
		$(MAKE) --no-print-directory $$t || { echo "make test: $$t FAILED after $$(( $$(date +%s) - s ))s"; exit 1; }; \
		echo "make test: $$t took $$(( $$(date +%s) - s ))s"; done; \
	echo "make test: all tiers passed in $$(( $$(date +%s) - total ))s"

# Benchmarks against the reference tools (scripts/bench runs every
# scripts/bench.d/* script; BENCH="verity layer" selects some).
bench: deps build
	INTACT=$(CURDIR)/$(BIN)/intact scripts/bench $(BENCH)

clean:
	rm -rf $(BIN)

# VM tier (internal/vmtest): packages whose tests need device-mapper,
# fs-verity, IPE or keyrings run inside Debian's kernel under QEMU.
# Host-side harness tests (negative controls, Secure Boot refusal, host
# images, the two-boot experiment) run on the host; every package with VM
# tests runs inside the guest through vmexec; the intactd tests in a guest
# with the container stack. The three lanes run at once (each guest keeps
# about one core busy under TCG); each lane's output is printed when all end.
VM_PKGS  ?= dm loop keyring verity veritydev fsverity ipe internal/vmtest cmd/intact kmod
VM_TOOLS ?= veritysetup,dmsetup,openssl,fsverity,mkfs.ext4,mkfs.erofs,keyctl,losetup,findmnt,mount,umount
VM_TIMING := $(BIN)/vm-timing.log
# The out-of-tree test module (kmod/testdata/testmod), built against Debian's
# linux-headers for the VM kernel and carried to /intact/testmod/{v1,v2}.
TESTMOD   := $(BIN)/testmod
VM_FILES  := --file $(CURDIR)/$(TESTMOD)/v1/intact_testmod.ko:/intact/testmod/v1/intact_testmod.ko \
	--file $(CURDIR)/$(TESTMOD)/v2/intact_testmod.ko:/intact/testmod/v2/intact_testmod.ko
vmexec:
	$(GO) build -o $(BIN)/vmexec ./internal/vmtest/cmd/vmexec

test-vm: deps build vmexec
	$(GO) run ./internal/vmtest/cmd/vmkbuild -o $(TESTMOD) --variant v1:INTACT_TESTMOD_VERSION=1 \
		--variant v2:INTACT_TESTMOD_VERSION=2 kmod/testdata/testmod
	@rm -f $(VM_TIMING) $(BIN)/vm-lane-*; start=$$(date +%s); \
	lane() { name=$$1; shift; s=$$(date +%s); "$$@" > $(BIN)/vm-lane-$$name.log 2>&1; rc=$$?; \
		echo "$$rc $$(( $$(date +%s) - s ))" > $(BIN)/vm-lane-$$name.rc; }; \
	lane host sh -c 'INTACT_TEST_STRICT=1 INTACT_VM_HOST_TESTS=1 INTACT_VM_TIMING_LOG=$(CURDIR)/$(VM_TIMING) \
		$(GO) test -count=1 -timeout 20m ./internal/vmtest/ ./host/ && \
		INTACT_TEST_STRICT=1 INTACT_VM_HOST_TESTS=1 INTACT_VM_TIMING_LOG=$(CURDIR)/$(VM_TIMING) \
		$(GO) test -count=1 -timeout 20m -run "^TestTwoBootMokListInVM$$" ./kmod/' & \
	lane guest env CGO_ENABLED=0 INTACT_TEST_STRICT=1 INTACT_VM_TIMING_LOG=$(CURDIR)/$(VM_TIMING) \
		$(GO) test -count=1 -p 1 -timeout 20m -exec "$(CURDIR)/$(BIN)/vmexec --mode secureboot --tool $(VM_TOOLS) --file $(CURDIR)/$(BIN)/intact:/usr/bin/intact --file $(CURDIR)/$(BIN)/intact-registry:/usr/bin/intact-registry $(VM_FILES)" \
		$$(for d in $(VM_PKGS); do [ -d $$d ] && echo ./$$d/...; done) & \
	lane containerd $(MAKE) --no-print-directory ctr-vm-run & \
	wait; rc=0; for l in host guest containerd; do read r secs < $(BIN)/vm-lane-$$l.rc || r=1; \
		echo "== test-vm lane $$l: exit $$r, $${secs:-?}s"; cat $(BIN)/vm-lane-$$l.log; [ "$$r" = 0 ] || rc=1; done; \
	cat $(VM_TIMING) 2>/dev/null; echo "test-vm: $$(( $$(date +%s) - start ))s in total (three lanes at once)"; exit $$rc

# The intactd tests (package snapshotter) in their own guest, which carries
# the real container stack: containerd, ctr, the runc shim, runc and crictl
# (scripts/build-containerd), intactd, intact, intact-registry (which
# `intact registry serve` runs) and the container payload ctrprobe.
CTR_VM_PKGS ?= snapshotter
CTR_TOOLS   := containerd ctr containerd-shim-runc-v2 runc crictl
test-vm-containerd: deps build vmexec ctr-vm-run

# (test-vm runs this in its containerd lane: nothing it builds is shared
# with the other lanes.)
ctr-vm-run:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ctrprobe ./internal/ctrprobe
	@cbin=$$(scripts/build-containerd) && files=$$(for t in $(CTR_TOOLS); do printf -- '--file %s/%s:/usr/local/bin/%s ' "$$cbin" $$t $$t; done; \
		for t in intact intact-registry intactd ctrprobe; do printf -- '--file $(CURDIR)/$(BIN)/%s:/usr/local/bin/%s ' $$t $$t; done) && \
	CGO_ENABLED=0 INTACT_TEST_STRICT=1 INTACT_VM_TIMING_LOG=$(CURDIR)/$(VM_TIMING) \
		$(GO) test -count=1 -p 1 -timeout 20m -exec "$(CURDIR)/$(BIN)/vmexec --mode secureboot --mem 3072 $$files" \
		$$(for d in $(CTR_VM_PKGS); do echo ./$$d/...; done)

# The whole chain in one boot (internal/containerhost): build the example
# container host, boot it from firmware under OVMF Secure Boot with QEMU user
# networking restricted to one registry port, run signed containers through
# ctr and CRI, refuse an unsigned one, run the privileged-container breakout
# matrix. Writes bin/e2e-report.json (one object per step and matrix row);
# bin/e2e keeps the image, the console log and the registry.
E2E_OUT := $(BIN)/e2e
e2e test-e2e: deps build
	@rm -rf $(E2E_OUT); mkdir -p $(E2E_OUT); start=$$(date +%s); \
	{ INTACT_E2E=1 INTACT_E2E_OUT=$(CURDIR)/$(E2E_OUT) INTACT_E2E_REPORT=$(CURDIR)/$(BIN)/e2e-report.json \
		$(GO) test -count=1 -timeout 30m -v -run '^TestContainerHostE2E$$' ./internal/containerhost/ 2>&1; echo $$? > $(E2E_OUT)/rc; } | \
		grep --line-buffered -E '^\s*(e2e_test|matrix_test)\.go:[0-9]+: |^(--- |ok|FAIL|PASS)|console tail|intact-(init|host):'; rc=$$(cat $(E2E_OUT)/rc); \
	echo "e2e: $$(( $$(date +%s) - start ))s; report: $(BIN)/e2e-report.json"; exit $$rc

# The README's main-job command, run end to end (offline; as root it also
# mounts the verified layers with the kernel's EROFS). bin/intact runs
# bin/intact-registry, which build puts next to it.
test-quickstart: build
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && $(BIN)/intact quickstart --dir "$$dir"

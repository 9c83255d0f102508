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

bench: deps build
	scripts/bench

clean:
	rm -rf $(BIN)

# VM tier (internal/vmtest): packages whose tests need device-mapper,
# fs-verity, IPE or keyrings run inside Debian's kernel under QEMU.
test-vm: deps build
	@echo "test-vm: (not yet wired)"

# The README's main-job command, run end to end.
test-quickstart: build
	@echo "test-quickstart: (not yet wired)"

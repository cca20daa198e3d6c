GO ?= go
# The version stamped into binaries ("bouncer version"): the git tag, or
# the commit, "-dirty" with local changes.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS = -X main.version=$(VERSION)

.PHONY: build test check check-unit fuzz bench soak release

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/bouncer ./cmd/bouncer

# Static binaries (no cgo) for linux/amd64 and linux/arm64 with the version
# stamped, their SHA-256 checksums, the licence, the example config and the
# systemd unit, in bin/release/ (bin/ is ignored by git). Check a download
# with: sha256sum -c --ignore-missing SHA256SUMS
RELEASE_DIR = bin/release
release:
	rm -rf $(RELEASE_DIR)
	mkdir -p $(RELEASE_DIR)
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" \
			-o $(RELEASE_DIR)/bouncer-$(VERSION)-linux-$$arch ./cmd/bouncer || exit 1; \
	done
	cp LICENSE config.example.toml dist/bouncer.service $(RELEASE_DIR)/
	cd $(RELEASE_DIR) && sha256sum bouncer-* > SHA256SUMS
	cat $(RELEASE_DIR)/SHA256SUMS

test:
	$(GO) test -race -shuffle=on ./...

check:
	$(GO) vet ./...
	staticcheck ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi

# systemd-analyze verify on dist/bouncer.service, with ExecStart pointed at
# a fresh build (verify wants the binary to exist). Any warning fails it.
# Skipped, with one line, where systemd is not installed.
check-unit:
	@if ! command -v systemd-analyze >/dev/null 2>&1; then echo "check-unit: systemd-analyze not installed; dist/bouncer.service not checked"; exit 0; fi; \
	d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	$(GO) build -o "$$d/bouncer" ./cmd/bouncer || exit 1; \
	sed "s|/usr/local/bin/bouncer|$$d/bouncer|" dist/bouncer.service > "$$d/bouncer.service"; \
	out=$$(systemd-analyze verify "$$d/bouncer.service" 2>&1); rc=$$?; \
	if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "$$out"; echo "check-unit: systemd-analyze verify failed"; exit 1; fi; \
	echo "check-unit: dist/bouncer.service verified"

# Each fuzz target for FUZZTIME (go test runs one target at a time).
# New crashers land in the package's testdata/fuzz and become test cases.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./parse/ -run '^$$' -fuzz '^FuzzMessage$$' -fuzztime $(FUZZTIME)
	$(GO) test ./parse/ -run '^$$' -fuzz '^FuzzMediaType$$' -fuzztime $(FUZZTIME)
	$(GO) test ./parse/ -run '^$$' -fuzz '^FuzzReaders$$' -fuzztime $(FUZZTIME)
	$(GO) test ./verp/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./server/ -run '^$$' -fuzz '^FuzzSession$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./store/bolt/ -run '^$$' -fuzz '^FuzzDomainStat$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store/bolt/ -run '^$$' -fuzz '^FuzzReadFrames$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store/bolt/ -run '^$$' -fuzz '^FuzzRecordJSON$$' -fuzztime $(FUZZTIME)

# Issue 8's benchmark: SMTP intake against smtp-sink and a go-smtp discard
# server, bouncer's memory under 200 x 1 MiB, and the store at scale.
# Needs Debian's postfix package (smtp-sink, smtp-source). See BENCHMARKS.md.
bench:
	sh bench/run.sh

# Issue 20's soak: bouncer serve under intake, queries, exports, pushes to
# a webhook and raw pruning at once for SOAK_TIME; prints RSS, open files,
# goroutines and database size at start and end, and fails if one grows
# without bound or anything acknowledged is lost. See BENCHMARKS.md (Soak).
SOAK_TIME ?= 10m
SOAK_RATE ?= 50
SOAK_FLAGS ?=
soak:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/bouncer ./cmd/bouncer
	$(GO) build -o bin/soak ./bench/soak
	@echo "commit: $$(git describe --always --dirty 2>/dev/null || echo 'not a git checkout')"
	@echo "machine: $$(nproc) CPUs, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $$(awk '/MemTotal/ {printf "%.1f GiB", $$2/1048576}' /proc/meminfo) RAM; $$(uptime)"
	bin/soak -bouncer bin/bouncer -time $(SOAK_TIME) -rate $(SOAK_RATE) $(SOAK_FLAGS)

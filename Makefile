GO ?= go

.PHONY: build test check fuzz bench

build:
	$(GO) build -o bin/bouncer ./cmd/bouncer

test:
	$(GO) test -race -shuffle=on ./...

check:
	$(GO) vet ./...
	staticcheck ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi

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

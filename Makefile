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

# Issue 8's benchmark: SMTP intake against smtp-sink and a go-smtp discard
# server, bouncer's memory under 200 x 1 MiB, and the store at scale.
# Needs Debian's postfix package (smtp-sink, smtp-source). See BENCHMARKS.md.
bench:
	sh bench/run.sh

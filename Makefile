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

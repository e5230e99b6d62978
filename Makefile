# blockwire — two commands: `make run` starts a working system, `make test` proves it.
SHELL       := bash
.SHELLFLAGS := -o pipefail -ec
GO        ?= go
BIN       ?= bin
DATA_DIR  ?= ./data
HTTP_ADDR ?= 127.0.0.1:8080
# The documented demo token `make run` uses; any real deployment sets its own
# (BLOCKWIRE_WEBHOOK_TOKEN) — serve refuses to start without authentication.
DEMO_TOKEN ?= blockwire-demo-token-change-me
BENCHTIME ?= 1s
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)

.PHONY: all build run test bench bench-go bench-webhook lint fuzz soak clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

run: build
	@echo "blockwire: embedded NATS on 127.0.0.1:4222, API on http://$(HTTP_ADDR), data in $(DATA_DIR)"
	@echo "post an incident:"
	@echo "  curl -s -X POST http://$(HTTP_ADDR)/v1/incidents -H 'Authorization: Bearer $(DEMO_TOKEN)' \\"
	@echo "    -H 'Content-Type: application/json' --data @testdata/incidents/valid/ip-v4-block.json"
	BLOCKWIRE_WEBHOOK_TOKEN=$${BLOCKWIRE_WEBHOOK_TOKEN:-$(DEMO_TOKEN)} $(BIN)/blockwire serve --http-addr $(HTTP_ADDR) --data-dir $(DATA_DIR)

test: build
	$(GO) test -race -count=1 ./...

# Every benchmark of the project — the Go benchmarks (each beside its reference
# measured in the same run), then the webhook load test against a real serve —
# and one summary table. Outputs stay in $(BENCH_OUT).
BENCH_OUT ?= bench-results
bench: build
	@mkdir -p $(BENCH_OUT)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./... | tee $(BENCH_OUT)/go.txt
	./internal/bench/webhook.sh | tee $(BENCH_OUT)/webhook.txt
	@echo; echo "== summary ($$(nproc) cores, $$(awk '/^MemTotal:/ {printf "%.1f GiB", $$2/1048576}' /proc/meminfo))"
	@$(GO) run ./internal/bench/summary $(BENCH_OUT)/go.txt $(BENCH_OUT)/webhook.txt

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

bench-webhook: build
	./internal/bench/webhook.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every fuzz target, seeded from testdata/, FUZZTIME each. Minimising a new input may take
# the fuzzer's default 60 s, the whole run: FUZZMINTIME keeps the time for fuzzing.
FUZZTIME ?= 60s
FUZZMINTIME ?= 5s
FUZZ_TARGETS ?= ./schemas:FuzzParseIncident ./schemas:FuzzBlockKey ./schemas:FuzzParseBlockKey \
	./schemas:FuzzCanonicalValue ./consumer:FuzzTranslate ./enforcer:FuzzJWTClaims ./enforcer:FuzzConfig \
	./webhook:FuzzStoredForm ./webhook:FuzzReplaceEntities
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) || exit 1; \
	done

# The long forms of the reliability scenarios (the compact ones run in make test).
soak: build
	BLOCKWIRE_SOAK=1 $(GO) test -count=1 -timeout 60m -v ./internal/faults/... ./internal/cluster/... | grep -E '^(---|ok|FAIL)|FIGURES'
	BLOCKWIRE_SOAK=1 $(GO) test -count=1 -timeout 20m -v -run KongChaos ./kongsync/ | grep -E '^(---|ok|FAIL)|FIGURES'
	BLOCKWIRE_SOAK=1 $(GO) test -count=1 -timeout 30m -v -run PluginCrash ./cmd/noname-prevention/ | grep -E '^(---|ok|FAIL)|FIGURES'


clean:
	rm -rf $(BIN)

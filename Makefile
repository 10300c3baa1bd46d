# The two fresh-machine commands are `make run` and `make test`; see README.md.
CARGO ?= cargo

.PHONY: dex jaeger promtool spire go-spiffe run test deps k8s-peers deploy-manifests lint build bench bench-compare bench-micro fuzz

## run: build, then run a whole mesh on this machine (`ward demo`; Ctrl-C stops it).
## DEMO_ARGS passes options, e.g. make run DEMO_ARGS="--duration 30s".
DEMO_ARGS ?=
run:
	$(CARGO) build --bins
	./target/debug/ward demo $(DEMO_ARGS)

## deps: install what building and testing need and a fresh machine lacks (idempotent;
## a fraction of a second when everything is there)
deps:
	./scripts/install-deps.sh

## test: install what is missing, lint, then the whole suite (unit, integration, end-to-end)
test: deps k8s-peers dex jaeger promtool spire go-spiffe
	$(MAKE) lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --doc
	$(CARGO) nextest run --workspace --no-fail-fast

## dex: build Dex, the OIDC identity provider the gateway tests run against, from its Go
## modules (cached in target/dex/bin: minutes once, then nothing)
dex:
	./scripts/dex.sh

## jaeger: build Jaeger, the trace backend the tracing tests export to over OTLP, from its
## Go modules (cached in target/jaeger/bin: minutes once, then nothing)
jaeger:
	./scripts/go-tool.sh jaeger github.com/jaegertracing/jaeger/cmd/jaeger v1.76.0

## spire: build SPIRE's server and agent (the identity source the SPIRE tests run against)
## from the SPIRE Go module, with cgo for its SQLite datastore (cached in target/spire/bin)
spire:
	GO_TOOL_CGO=1 ./scripts/go-tool.sh spire github.com/spiffe/spire/cmd/spire-server v1.13.3 github.com/spiffe/spire/cmd/spire-agent

## go-spiffe: build the suite's go-spiffe Workload API client (tests/peers/go-spiffe;
## seconds once its modules are cached in target/go-spiffe)
go-spiffe:
	./scripts/go-peer.sh go-spiffe

## promtool: build promtool, which checks and unit-tests deploy/observability's alert rules
## and the dashboard's queries, from the Prometheus Go module (cached in target/promtool/bin)
promtool:
	./scripts/go-tool.sh promtool github.com/prometheus/prometheus/cmd/promtool v0.316.0

## k8s-peers: build kube-apiserver, kubectl and etcd from their Go modules for the
## Kubernetes tests (cached in target/k8s/bin: minutes once, then nothing)
k8s-peers:
	./scripts/k8s-peers.sh

## deploy-manifests: regenerate deploy/base/ward.yaml from `ward install`
deploy-manifests:
	$(CARGO) build -p ward-cli
	./target/debug/ward install > deploy/base/ward.yaml

## lint: formatting, clippy with warnings as errors, and the layout rules (no file over
## 600 lines, no function over 100, no import cycle in or between crates)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/test_layout_check.py
	python3 scripts/layout_check.py

## build: release binaries in target/release
build:
	$(CARGO) build --release --workspace --bins

## bench: ward beside a direct connection and Envoy (bench/run.py, ~6 minutes), writing
## bench/results/latest.{md,json}; transparent capture beside explicit ports in two
## network-namespace pods (bench/capture.py, root; bench/results/capture.md); the gateway
## beside Envoy with jwt_authn (bench/gateway.py; bench/results/gateway.{md,json}); then lists
## the micro-benchmarks (make bench-micro runs them)
bench:
	./bench/setup.sh
	$(CARGO) build --release --bins
	python3 bench/run.py
	python3 bench/capture.py
	python3 bench/gateway.py
	@echo "micro-benchmarks (make bench-micro):"
	@echo "  certs/benches/certs.rs           CSR signing, SVID chain verification"
	@echo "  policy/benches/policy.rs         policy decisions and compilation at 1,000 policies"
	@echo "  tests/benches/control_plane.rs   Certify rate, 10,000 Policy.Watch streams, control-plane RSS"
	@echo "  k8s/benches/discovery.rs         endpoints from 5,000 pods and 1,000 Services, whole and per event"

## bench-compare: latency of this release build beside an earlier one, alternating
## (BASE=bin dir of the earlier build, e.g. target/baseline/release)
bench-compare:
	./bench/setup.sh
	$(CARGO) build --release --bins
	python3 bench/compare.py --base $(BASE)

## bench-micro: the criterion micro-benchmarks of each crate
bench-micro:
	$(CARGO) bench -p ward-certs --bench certs
	$(CARGO) bench -p ward-policy --bench policy
	$(CARGO) bench -p ward-k8s --bench discovery
	$(CARGO) build --release --bins
	$(CARGO) bench -p ward-tests --bench control_plane

## fuzz: every cargo-fuzz target for FUZZ_SECONDS each (default 60), on nightly with
## AddressSanitizer; new inputs go to fuzz/corpus/<target>, crashes to fuzz/artifacts/
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := spiffe_id policy_yaml policy_wire path_and_authority h1_guard detect csr
fuzz:
	./fuzz/setup.sh
	$(CARGO) +nightly fuzz build --target-dir target/fuzz
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(CARGO) +nightly fuzz run --target-dir target/fuzz $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 || exit 1; \
	done

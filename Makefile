# capi-stream developer commands. `make run` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install run test test-fast lint kafka-up kafka-down bench soak clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

kafka-up: install
	$(PY) scripts/local_kafka.py up

kafka-down:
	@if [ -x $(PY) ]; then $(PY) scripts/local_kafka.py down; else $(PYTHON) scripts/local_kafka.py down; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict stream traffic

test: install
	scripts/test.sh

# The inner loop: lint, type-check and every test that needs no Kafka broker, in under a minute.
# Starts no broker; a selected test that asks for one fails (see tests/conftest.py).
test-fast: lint
	scripts/install_helm.sh >/dev/null
	scripts/install_prometheus.sh
	$(VENV)/bin/pytest --without-kafka

run: install
	$(PY) scripts/run_local.py

bench: install
	$(PY) benchmarks/run.py

DURATION ?= 460
SEED ?= 1
soak: install
	$(PY) scripts/soak.py --duration $(DURATION) --seed $(SEED)

clean: kafka-down
	rm -rf $(VENV) .local .mypy_cache .pytest_cache .ruff_cache

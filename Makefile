# capi-stream developer commands. `make run` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# One release number for the package, the image tag and the chart (version and appVersion).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= capi-stream
DIST ?= dist

.PHONY: install run test test-fast lint kafka-up kafka-down bench soak clean image chart rules

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
	$(VENV)/bin/mypy --strict stream traffic benchmarks

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

# The container image, tagged $(IMAGE):$(VERSION) (the chart's default tag), with whichever
# engine is installed.
image:
	@engine="$$(command -v docker || command -v podman || command -v buildah || true)"; \
	if [ -z "$$engine" ]; then \
	  echo "make image: no container engine found (docker, podman or buildah); install one," >&2; \
	  echo "  or build on a machine that has one: docker build -t $(IMAGE):$(VERSION) ." >&2; \
	  exit 1; \
	fi; \
	case "$$engine" in \
	  */buildah) sub=bud ;; \
	  *) sub=build ;; \
	esac; \
	echo "$$engine $$sub -t $(IMAGE):$(VERSION) -f Dockerfile ."; \
	"$$engine" "$$sub" -t "$(IMAGE):$(VERSION)" -f Dockerfile .

# The Helm chart as $(DIST)/capi-stream-$(VERSION).tgz (Chart.yaml carries the same version).
chart:
	helm="$$(bash scripts/install_helm.sh)" && "$$helm" package helm/capi-stream --destination $(DIST)

# Regenerates the plain-Prometheus rule file from the chart's alert template.
rules:
	bash scripts/render_alert_rules.sh > helm/capi-stream/rules/capi-stream-alerts.yaml.new
	mv helm/capi-stream/rules/capi-stream-alerts.yaml.new helm/capi-stream/rules/capi-stream-alerts.yaml

clean: kafka-down
	rm -rf $(VENV) .local .mypy_cache .pytest_cache .ruff_cache

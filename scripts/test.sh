#!/usr/bin/env bash
# `make test`: lint, type-check and run the whole suite against a real local Kafka broker.
# Starts the broker if none is running and stops whatever it started, whatever the outcome.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

started_kafka=0
cleanup() {
  if [ "$started_kafka" = 1 ]; then "$bin/python" scripts/local_kafka.py down; fi
}
trap cleanup EXIT INT TERM

if ! "$bin/python" scripts/local_kafka.py status >/dev/null; then
  "$bin/python" scripts/local_kafka.py up || exit 1
  started_kafka=1
fi
set -a; source .local/kafka.env; set +a

status=0
step() {
  echo "== $*"
  "$@" || { echo "!! failed: $*"; status=1; }
}
step "$bin/ruff" check .
step "$bin/ruff" format --check .
step "$bin/mypy" --strict stream traffic benchmarks
# Tools of the chart and alert-rule tests, built or installed once here rather than inside the
# first test that needs them (and its timeout).
step scripts/install_helm.sh
step scripts/install_prometheus.sh
step "$bin/pytest" "$@"
exit $status

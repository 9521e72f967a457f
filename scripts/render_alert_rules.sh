#!/usr/bin/env bash
# Prints helm/capi-stream/rules/capi-stream-alerts.yaml: the chart's alert rules rendered for a
# plain Prometheus whose scrape job is `capi-stream`. `make rules` writes the file; a test keeps it
# identical to this output.
set -euo pipefail
cd "$(dirname "$0")/.."
helm="${HELM:-$(bash scripts/install_helm.sh)}"
rendered="$("$helm" template capi-stream helm/capi-stream --show-only templates/prometheusrule.yaml \
  --set metrics.prometheusRule.enabled=true \
  --set-string 'metrics.prometheusRule.selector=job="capi-stream"' \
  --set kafka.bootstrapServers=unused:9092)"
cat <<'HEADER'
# capi-stream alert rules for a plain Prometheus whose scrape job is named `capi-stream`.
# Generated from the Helm chart (templates/_alerts.tpl) by `make rules`: edit the template, not this
# file. The chart installs the same rules as a PrometheusRule scoped to its release, tunable per
# alert (metrics.prometheusRule.alerts). Each alert has a section in docs/runbook.md.
HEADER
printf '%s\n' "$rendered" | sed -n '/^spec:$/,$p' | tail -n +2 | sed 's/^  //'

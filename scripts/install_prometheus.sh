#!/usr/bin/env bash
# Installs Debian's `prometheus` package (prometheus + promtool) unless both are already on PATH.
# Idempotent. The packaged service is never started: tests run their own instance on loopback.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install_prometheus: need root or sudo" >&2; exit 1; }
  sudo="sudo"
fi

# Serialise concurrent callers (several pytest sessions may start at once); apt has its own lock
# but fails instead of waiting.
exec 9>/tmp/capi-stream-install-prometheus.lock
flock 9
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101 keeps the package's postinst from starting a system-wide Prometheus on :9090.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

if ! apt-cache show prometheus >/dev/null 2>&1; then
  $sudo apt-get update -q
fi
$sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null

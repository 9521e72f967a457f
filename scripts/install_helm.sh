#!/usr/bin/env bash
# Builds the pinned `helm` from the Go module proxy once and caches it; prints the binary's path.
# Idempotent: a cached binary that reports the pinned version is reused without rebuilding.
set -euo pipefail

HELM_VERSION=v3.19.0
# The Kubernetes version Helm assumes without a cluster (`.Capabilities.KubeVersion`, deprecation
# lint): the official v3.19.0 release derives it from its client-go v0.34, i.e. Kubernetes 1.34.
K8S_MAJOR=1
K8S_MINOR=34
CACHE="${CAPI_STREAM_CACHE:-$HOME/.cache/capi-stream}"
BIN_DIR="$CACHE/bin"
HELM="$BIN_DIR/helm"

if [ -x "$HELM" ] && [ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
  echo "$HELM"
  exit 0
fi

# The Go toolchain's default install location, for shells whose PATH lacks it.
PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install_helm.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$BIN_DIR"
echo "install_helm.sh: building helm $HELM_VERSION from the Go module proxy (once)" >&2
# The same -X flags as Helm's own Makefile, so the binary behaves like the released one.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=$K8S_MAJOR"
  ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$K8S_MINOR"
done
GOBIN="$BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
installed="$("$HELM" version --template '{{.Version}}')"
[ "$installed" = "$HELM_VERSION" ] || { echo "install_helm.sh: built $installed" >&2; exit 1; }
echo "$HELM"

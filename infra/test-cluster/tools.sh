#!/usr/bin/env bash
# Builds the Go tools the suite checks the project's artefacts with, from the Go module proxy, cached
# by version OUTSIDE the repo (like build.sh): helm (lint and render infra/helm) and promtool (check the
# alerting rules and the /metrics pages). Prints the directory holding them on its last line.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
CACHE=${BSO_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bso-k8s}
OUT="$CACHE/bin/tools-helm-$HELM_VERSION-prometheus-$PROMETHEUS_VERSION"

have_all() { [ -x "$OUT/helm" ] && [ -x "$OUT/promtool" ]; }
if have_all; then echo "$OUT"; exit 0; fi
if [ "${BSO_K8S_CHECK_ONLY:-}" = 1 ]; then
  echo "tools.sh: helm and promtool are not built in $OUT: run 'npm run cluster:build' ('npm test' builds them before the tests)" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"
  else echo "tools.sh: Go is required to build helm and promtool (go.dev toolchain, 1.26+)" >&2; exit 1; fi
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
SRC="$CACHE/src"
mkdir -p "$OUT" "$SRC"
start=$(date +%s)

# build NAME MODULE VERSION PACKAGE [LDFLAGS]: one module of its own per tool, so their dependency
# versions never meet.
build() {
  local name=$1 module=$2 version=$3 pkg=$4 ldflags=${5:-}
  [ -x "$OUT/$name" ] && return 0
  local d="$SRC/$name-$version"
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  go mod init "bso/$name" >/dev/null 2>&1
  go get "$pkg@$version" >&2
  go build -trimpath -ldflags "-s -w $ldflags" -o "$OUT/$name.tmp" "$pkg" && mv "$OUT/$name.tmp" "$OUT/$name"
  echo "built $name $version after $(( $(date +%s) - start ))s" >&2
  cd - >/dev/null
}
build helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build promtool github.com/prometheus/prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool
have_all
echo "$OUT"

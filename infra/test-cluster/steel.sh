#!/usr/bin/env bash
# Builds the steel-browser peer (../shared/peers/steel-browser, the real image the `steel` profile talks
# to) once per commit, OUTSIDE the repo, for the steel suite's process kubelet. The build is read by an
# account of its own (steel runs unprivileged), so it lives in a world-readable cache, not under ~root.
# Prints the build's directory on its last line; prints one line and exits 0 when the peer is absent
# (the suite then says it did not run). With BSO_STEEL_CHECK_ONLY=1 it only reports whether it is built.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
PEER=${BSO_STEEL_PEER:-$root/../shared/peers/steel-browser}
archive=$(ls "$PEER"/steel-browser-*.tar.gz 2>/dev/null | head -n 1 || true)
if [ ! -f "$PEER/setup.sh" ] || [ -z "$archive" ]; then
  echo "steel.sh: no steel-browser peer at $PEER: the steel profile suite will not run" >&2
  exit 0
fi
commit=$(basename "$archive" .tar.gz)
commit=${commit#steel-browser-}
CACHE=${BSO_STEEL_CACHE:-/var/cache/bso-steel}
OUT="$CACHE/$commit"
# The API and its own UI (which it serves at /ui/; the suite opens it in a browser).
built() { [ -f "$OUT/api/build/index.js" ] && [ -f "$OUT/ui/dist/index.html" ]; }
if built; then echo "$OUT"; exit 0; fi
if [ "${BSO_STEEL_CHECK_ONLY:-}" = 1 ]; then
  echo "steel.sh: steel-browser $commit is not built in $OUT: run 'bash infra/test-cluster/steel.sh' ('npm test' builds it before the tests)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "steel.sh: the steel suite runs steel as an account of its own, which needs root: not building" >&2
  exit 0
fi
mkdir -p "$CACHE"
chmod 755 "$CACHE"
# Built aside and moved in whole, so an interrupted build never looks finished.
work=$(mktemp -d "$CACHE/.build-$commit-XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
WITH_UI=1 bash "$PEER/setup.sh" "$work/steel" >&2
chmod -R a+rX "$work/steel"
rm -rf "$OUT"
mv "$work/steel" "$OUT"
echo "steel.sh: built steel-browser $commit in $(( $(date +%s) - start )) s" >&2
echo "$OUT"

#!/usr/bin/env bash
# Builds etcd and the Kubernetes control plane (apiserver, controller-manager, scheduler) from the Go
# module proxy and caches the binaries by version OUTSIDE the repo, so a rerun with the same versions
# costs nothing. Prints the directory holding the binaries on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${BSO_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bso-k8s}
OUT="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)

have_all() {
  [ -x "$OUT/etcd" ] || return 1
  for c in "${COMPONENTS[@]}"; do [ -x "$OUT/$c" ] || return 1; done
}
if have_all; then echo "$OUT"; exit 0; fi
if [ "${BSO_K8S_CHECK_ONLY:-}" = 1 ]; then
  echo "build.sh: the test control plane is not built in $OUT: run 'npm run cluster:build' ('npm test' builds it before the tests)" >&2
  exit 1
fi

# Machines of this kind have Go in /usr/local/go even when it is not on PATH.
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"
  else echo "build.sh: Go is required to build the test control plane (go.dev toolchain, 1.26+)" >&2; exit 1; fi
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
SRC="$CACHE/src"
mkdir -p "$OUT" "$SRC"
start=$(date +%s)

if [ ! -x "$OUT/etcd" ]; then
  d="$SRC/etcd-$ETCD_VERSION"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod init bso/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go mod tidy >&2
  go build -trimpath -o "$OUT/etcd.tmp" . && mv "$OUT/etcd.tmp" "$OUT/etcd"
  echo "built etcd $ETCD_VERSION after $(( $(date +%s) - start ))s" >&2
fi

# shellcheck source=k8s-module.sh
source "$HERE/k8s-module.sh"
k8s_module "$SRC/k8s-$K8S_VERSION" "$K8S_VERSION"
for c in "${COMPONENTS[@]}"; do
  mkdir -p "cmd/$c"
  case $c in
    kube-apiserver) pkg=k8s.io/kubernetes/cmd/kube-apiserver/app; ctor=NewAPIServerCommand ;;
    kube-controller-manager) pkg=k8s.io/kubernetes/cmd/kube-controller-manager/app; ctor=NewControllerManagerCommand ;;
    kube-scheduler) pkg=k8s.io/kubernetes/cmd/kube-scheduler/app; ctor=NewSchedulerCommand ;;
  esac
  cat > "cmd/$c/main.go" <<GO
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	app "$pkg"
)

func main() { os.Exit(cli.Run(app.$ctor())) }
GO
done
go mod tidy >&2
ldflags=$(k8s_ldflags "$K8S_VERSION")
for c in "${COMPONENTS[@]}"; do
  go build -trimpath -ldflags "$ldflags" -o "$OUT/$c.tmp" "./cmd/$c" && mv "$OUT/$c.tmp" "$OUT/$c"
  echo "built $c after $(( $(date +%s) - start ))s" >&2
done
have_all
echo "$OUT"

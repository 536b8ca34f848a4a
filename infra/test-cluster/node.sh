#!/usr/bin/env bash
# Builds what a real Kubernetes node runs, for the real-node suite and `npm run bench:k8s`, from the Go
# module proxy, cached by version OUTSIDE the repo (like build.sh): the kubelet, kube-proxy and kubectl
# from k8s.io/kubernetes; containerd, ctr and its runc shim; CoreDNS with the plugins a cluster's DNS
# uses; and a static pause program for the pod sandbox image. runc and the CNI plugins are Debian's
# (`npm run setup`). Prints the directory holding the binaries on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

K8S_VERSION=${K8S_VERSION:-v1.37.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
CACHE=${BSO_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bso-k8s}
OUT="$CACHE/bin/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-coredns-$COREDNS_VERSION"
BINARIES=(kubelet kube-proxy kubectl containerd ctr containerd-shim-runc-v2 coredns pause)

have_all() {
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if have_all; then echo "$OUT"; exit 0; fi
if [ "${BSO_K8S_CHECK_ONLY:-}" = 1 ]; then
  echo "node.sh: the real node's binaries are not built in $OUT: run 'bash infra/test-cluster/node.sh' ('npm test' builds them before the tests)" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"
  else echo "node.sh: Go is required to build the real node (go.dev toolchain, 1.26+)" >&2; exit 1; fi
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
SRC="$CACHE/src"
mkdir -p "$OUT" "$SRC"
start=$(date +%s)
built() { echo "built $1 after $(( $(date +%s) - start ))s" >&2; }

# kubelet, kube-proxy, kubectl: Kubernetes' own main packages, in a module like the control plane's.
if [ ! -x "$OUT/kubelet" ] || [ ! -x "$OUT/kube-proxy" ] || [ ! -x "$OUT/kubectl" ]; then
  # shellcheck source=k8s-module.sh
  source "$HERE/k8s-module.sh"
  k8s_module "$SRC/node-k8s-$K8S_VERSION" "$K8S_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  go mod tidy >&2
  ldflags=$(k8s_ldflags "$K8S_VERSION")
  for c in kubelet kube-proxy kubectl; do
    [ -x "$OUT/$c" ] && continue
    go build -trimpath -ldflags "$ldflags" -o "$OUT/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$OUT/$c.tmp" "$OUT/$c"
    built "$c"
  done
  cd "$HERE"
fi

# containerd 2.x without the storage drivers this node does not use (no cgo: static binaries).
if [ ! -x "$OUT/containerd" ] || [ ! -x "$OUT/ctr" ] || [ ! -x "$OUT/containerd-shim-runc-v2" ]; then
  for c in containerd ctr containerd-shim-runc-v2; do
    CGO_ENABLED=0 GOBIN="$OUT" go install -trimpath -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      -tags "no_btrfs no_devmapper no_zfs" "github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION"
    built "$c"
  done
fi

# CoreDNS with only the plugins a cluster's DNS uses here (the full build links every cloud's SDK).
if [ ! -x "$OUT/coredns" ]; then
  d="$SRC/coredns-$COREDNS_VERSION"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  cat > main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	"github.com/coredns/coredns/coremain"
)

// The order plugins run in, as CoreDNS's own plugin.cfg has them.
func init() {
	dnsserver.Directives = []string{"errors", "log", "health", "ready", "kubernetes", "cache", "loadbalance"}
}

func main() { coremain.Run() }
GO
  go mod init bso/coredns >/dev/null 2>&1
  go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
  go mod tidy >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/coredns.tmp" . && mv "$OUT/coredns.tmp" "$OUT/coredns"
  built coredns
  cd "$HERE"
fi

# The pod sandbox: sleeps until told to stop (what registry.k8s.io/pause does).
if [ ! -x "$OUT/pause" ]; then
  d="$SRC/pause"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  cat > main.go <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of the pod it also reaps the zombies of containers sharing its process namespace.
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
GO
  go mod init bso/pause >/dev/null 2>&1
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/pause.tmp" . && mv "$OUT/pause.tmp" "$OUT/pause"
  built pause
  cd "$HERE"
fi
have_all
echo "$OUT"

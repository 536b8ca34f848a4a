#!/usr/bin/env bash
# Installs what running and testing need on a fresh Debian machine: Chromium, redis-server, openssl
# and nftables from Debian, then the npm dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# nft: an agent running as root keeps its browsers' account off this host's loopback services.
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
# The real-node suite and `npm run images`: a Debian root filesystem for each image (mmdebstrap), the
# OCI runtime containerd starts pods with (runc), the pod network (CNI plugins), Services (iptables).
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need+=(iptables)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
if [ ${#need[@]} -gt 0 ]; then
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Chromium never runs as root: an agent running as root starts browsers as this unprivileged account
# (CHROMIUM_USER), with Chromium's own sandbox on. No home, no shell, no password.
if ! id bso-chromium >/dev/null 2>&1; then
  "${sudo_cmd[@]}" useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bso-chromium
fi
npm ci --no-audit --no-fund

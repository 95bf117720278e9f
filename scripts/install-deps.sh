#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian machine:
# Debian packages (only the missing ones), Go modules and cnitool.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(iproute2 nftables iptables ipset iputils-ping netcat-openbsd tcpdump iperf3
      sockperf etcd-server etcd-client bird2 gobgpd containernetworking-plugins conntrack
      systemd util-linux containerd runc)  # systemd-analyze and setpriv: make deb-test checks the units; containerd and runc: the real-node tests (kubenode)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
go mod download
if ! command -v cnitool >/dev/null 2>&1; then
  echo "install-deps: go install cnitool"
  go install github.com/containernetworking/cni/cnitool@v1.3.1
fi

#!/usr/bin/env bash
# Installs what moat's tests need on a fresh Debian/Ubuntu machine, as root.
# Idempotent: a second run installs nothing.
set -euo pipefail

need_apt=()
for pair in "curl:curl" "ca-certificates:/etc/ssl/certs/ca-certificates.crt" "iproute2:ip" "nftables:/usr/sbin/nft" "iptables:/usr/sbin/iptables-legacy"; do
  pkg=${pair%%:*} probe=${pair#*:}
  if [[ $probe == /* ]]; then [[ -e $probe ]] || need_apt+=("$pkg"); else command -v "$probe" >/dev/null || need_apt+=("$pkg"); fi
done
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test-deps: missing ${need_apt[*]}; run as root to install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "test-deps: Go is not installed (https://go.dev/dl/, or apt-get install golang-go)" >&2; exit 1; }

gobin=$(go env GOPATH)/bin
if [[ ! -x $gobin/staticcheck ]] || ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "0.8.2"; then
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

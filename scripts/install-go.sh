#!/usr/bin/env bash
# Makes sure Go (the version go.mod asks for, or newer) is at /usr/local/go,
# fetching the toolchain from the Go module proxy when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(awk '/^go /{print $2}' go.mod)
export PATH=$PATH:/usr/local/go/bin

have=$(go env GOVERSION 2>/dev/null | sed 's/^go//') || have=""
if [[ -n $have ]] && [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1) == "$want" ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-go: Go $want or newer is needed (found: ${have:-none}); run as root to install it" >&2
  exit 1
fi
for tool in curl unzip; do
  command -v $tool >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl unzip ca-certificates; break; }
done
arch=$(dpkg --print-architecture)
proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%,*}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "install-go: fetching Go $want for linux-$arch from $proxy"
curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-$arch.zip"
unzip -q "$tmp/go.zip" -d "$tmp"
rm -rf /usr/local/go
mv "$tmp/golang.org/toolchain@v0.0.1-go$want.linux-$arch" /usr/local/go
chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* 2>/dev/null || true
/usr/local/go/bin/go version

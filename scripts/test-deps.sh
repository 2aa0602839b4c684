#!/usr/bin/env bash
# Installs what moat's tests need on a fresh Debian/Ubuntu machine, as root.
# Idempotent: a second run installs nothing.
set -euo pipefail

need_apt=()
# swaks is the mail tests' real SMTP client; it needs Net::SSLeay for STARTTLS.
# chromium is the dashboard tests' headless browser (one per package run).
# restic is what moat's backups drive.
for pair in "curl:curl" "ca-certificates:/etc/ssl/certs/ca-certificates.crt" "iproute2:ip" "nftables:/usr/sbin/nft" "iptables:/usr/sbin/iptables-legacy" "swaks:swaks" "chromium:chromium" "restic:restic" "lynis:lynis"; do
  pkg=${pair%%:*} probe=${pair#*:}
  if [[ $probe == /* ]]; then [[ -e $probe ]] || need_apt+=("$pkg"); else command -v "$probe" >/dev/null || need_apt+=("$pkg"); fi
done
for pair in "libnet-ssleay-perl:Net::SSLeay" "libio-socket-ssl-perl:IO::Socket::SSL"; do
  perl -M"${pair#*:}" -e 1 2>/dev/null || need_apt+=("${pair%%:*}")
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

# restic's REST server, for the backup tests: Debian does not package it,
# so it is built from its Go module (pinned), into the tests' own cache.
rest_server=/var/cache/moat-test/bin/rest-server
if [[ ! -x $rest_server ]] || ! "$rest_server" --version 2>/dev/null | grep -q "0.14.0"; then
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init moat-test/rest-server >/dev/null 2>&1 &&
    go get github.com/restic/rest-server/cmd/rest-server@v0.14.0 >/dev/null 2>&1 &&
    mkdir -p "$(dirname "$rest_server")" &&
    CGO_ENABLED=0 go build -o "$rest_server" github.com/restic/rest-server/cmd/rest-server)
  rm -rf "$tmp"
fi

# An S3-compatible server for the backup tests: gofakes3, built from its
# Go module (pinned; the version is in the file's name).
s3_server=/var/cache/moat-test/bin/gofakes3-v1.2.0
if [[ ! -x $s3_server ]]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init moat-test/gofakes3 >/dev/null 2>&1 &&
    go get github.com/johannesboyne/gofakes3/cmd/gofakes3@v1.2.0 >/dev/null 2>&1 &&
    mkdir -p "$(dirname "$s3_server")" &&
    CGO_ENABLED=0 go build -o "$s3_server" github.com/johannesboyne/gofakes3/cmd/gofakes3)
  rm -rf "$tmp"
fi

# A real dockerd for the audit's Docker tests: Debian's docker.io,
# containerd and runc, unpacked (not installed) so that no docker service is
# set up or started on this machine; tests start dockerd in a network and
# mount namespace of their own. busybox-static is the one image's content.
docker_dir=/var/cache/moat-test/docker
if [[ ! -x $docker_dir/usr/sbin/dockerd || ! -x $docker_dir/usr/sbin/runc || ! -x $docker_dir/usr/bin/containerd ]]; then
  for pkg in libdevmapper1.02.1 libseccomp2 busybox-static iptables; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"
    }
  done
  tmp=$(mktemp -d)
  (cd "$tmp" && chown _apt "$tmp" 2>/dev/null; apt-get download -qq docker.io containerd runc || { apt-get update -qq && apt-get download -qq docker.io containerd runc; })
  mkdir -p "$docker_dir"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$docker_dir"; done
  rm -rf "$tmp"
fi

# A real sshd for the SSH and guard tests: Debian's openssh-server,
# unpacked (not installed) so that no sshd service is set up or started on
# this machine. Tests start it with their own config on a high port.
sshd_dir=/var/cache/moat-test/openssh
if [[ ! -x $sshd_dir/usr/sbin/sshd ]] || ! ldd "$sshd_dir/usr/sbin/sshd" >/dev/null 2>&1 || ldd "$sshd_dir/usr/sbin/sshd" | grep -q "not found"; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test-deps: sshd is not unpacked at $sshd_dir; run as root" >&2
    exit 1
  fi
  for pkg in libwrap0 openssh-client; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"
    }
  done
  tmp=$(mktemp -d)
  (cd "$tmp" && chown _apt "$tmp" 2>/dev/null; apt-get download -qq openssh-server || { apt-get update -qq && apt-get download -qq openssh-server; })
  mkdir -p "$sshd_dir"
  dpkg-deb -x "$tmp"/openssh-server_*.deb "$sshd_dir"
  rm -rf "$tmp"
fi
# sshd separates privileges into this user, as the package would create it.
if ! getent passwd sshd >/dev/null; then
  useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd
fi

# PostgreSQL and Redis for the audit's bind tests and the fleet's store:
# Debian's postgresql and redis-server, unpacked (not installed) so that no
# cluster or service is set up or started on this machine; tests run them
# as their own processes, as nobody, with data in temp dirs. The shared
# libraries they link are installed (libraries start nothing).
unpack() { # unpack DIR PACKAGE...: the packages' files under DIR
  local dir=$1 tmp
  shift
  tmp=$(mktemp -d)
  (cd "$tmp" && chown _apt "$tmp" 2>/dev/null; apt-get download -qq "$@" || { apt-get update -qq && apt-get download -qq "$@"; })
  mkdir -p "$dir"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
  rm -rf "$tmp"
}
need_libs() { # need_libs PACKAGE...: installs those not installed
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}
pg_dir=/var/cache/moat-test/postgresql
if ! compgen -G "$pg_dir/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  pg=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/^  Depends: \(postgresql-[0-9][0-9]*\)$/\1/p' | head -1)
  [[ -n $pg ]] || { apt-get update -qq; pg=$(apt-cache depends postgresql | sed -n 's/^  Depends: \(postgresql-[0-9][0-9]*\)$/\1/p' | head -1); }
  need_libs libicu72 libxml2 libldap-2.5-0 libpq5 libxslt1.1 liblz4-1 libzstd1 || need_libs libxml2 libpq5 libxslt1.1 liblz4-1 libzstd1
  unpack "$pg_dir" "$pg" "postgresql-client-${pg#postgresql-}"
fi
redis_dir=/var/cache/moat-test/redis
if [[ ! -x $redis_dir/usr/bin/redis-server ]]; then
  need_libs libjemalloc2 liblzf1 libatomic1
  unpack "$redis_dir" redis-server redis-tools
fi

# systemd-journal-remote writes real journal files without journald, for
# the guard's journal tests; pinned to the installed systemd so that
# nothing else is upgraded. It enables and starts no service.
if [[ ! -x /lib/systemd/systemd-journal-remote && ! -x /usr/lib/systemd/systemd-journal-remote ]]; then
  v=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
  if [[ -n $v ]] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "systemd-journal-remote=$v" >/dev/null; then
    :
  else
    echo "test-deps: WARNING: systemd-journal-remote $v could not be installed; the guard's journal-file test will skip" >&2
  fi
fi

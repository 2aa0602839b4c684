#!/usr/bin/env bash
# bench/guard.sh: moat's sshd matcher against fail2ban's, on one core, on
# the same generated auth log. See "The sshd matcher against fail2ban" in
# bench/README.md.
#
#   sudo bench/guard.sh [flags of bench/guard]     e.g. -check-all, -passes 9
#
# Environment (all optional):
#   LINES=1200000   lines of the generated log (fail2ban takes about 40 s)
#   SEED=1          the generator's seed: the same seed gives the same file
#   CPU=1           the core both run on, one after the other
#   CACHE=/var/cache/moat-bench   where fail2ban's .deb is kept and unpacked
#
# fail2ban is not installed: Debian's package would start fail2ban-server,
# which bans on this host. Its .deb is downloaded (apt-get download) and
# unpacked (dpkg-deb -x) under CACHE, and fail2ban-regex runs from there
# with Debian's python3. What it writes is under bench/.work/guard/: the
# log (about 110 MB), the program, summary.txt.
set -Eeuo pipefail

LINES=${LINES:-1200000}
SEED=${SEED:-1}
CPU=${CPU:-1}
CACHE=${CACHE:-/var/cache/moat-bench}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$ROOT/bench/.work/guard
export PATH=$PATH:/usr/local/go/bin

die() { echo "bench/guard.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (sudo bench/guard.sh): it downloads fail2ban's package with apt-get into $CACHE"
((CPU < $(nproc))) || die "CPU=$CPU, but this machine has $(nproc) CPUs (0-$(($(nproc) - 1)))"
command -v go >/dev/null || die "no Go toolchain: run 'make toolchain' first"
command -v taskset >/dev/null || apt-get install -y util-linux >&2

# Debian's python3, the one its fail2ban package is built for.
PYTHON=/usr/bin/python3
if [[ ! -x $PYTHON ]]; then
	apt-get install -y python3 >&2 || { apt-get update >&2 && apt-get install -y python3 >&2; } || die "cannot install python3"
fi

mkdir -p "$WORK" "$CACHE"
deb=$(find "$CACHE" -maxdepth 1 -name 'fail2ban_*_all.deb' | sort -V | tail -n1)
if [[ -z $deb ]]; then
	# apt-get warns that it downloads as root (its _apt user cannot write
	# CACHE); the download is all the same.
	(cd "$CACHE" && { apt-get download fail2ban >&2 || { apt-get update >&2 && apt-get download fail2ban >&2; }; }) ||
		die "apt-get download fail2ban failed"
	deb=$(find "$CACHE" -maxdepth 1 -name 'fail2ban_*_all.deb' | sort -V | tail -n1)
fi
version=$(dpkg-deb -f "$deb" Version)
tree=$CACHE/fail2ban-$version
if [[ ! -x $tree/usr/bin/fail2ban-regex ]]; then
	rm -rf "$tree"
	dpkg-deb -x "$deb" "$tree"
fi

(cd "$ROOT" && go build -trimpath -o "$WORK/guardbench" ./bench/guard) ||
	die "go build ./bench/guard failed (someone may be mid-edit in internal/guard: run again)"

{
	echo "moat guard benchmark, $(date -u '+%F %H:%M UTC')"
	echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
	echo "fail2ban: $(basename "$deb"), unpacked in $tree"
	echo
	taskset -c "$CPU" "$WORK/guardbench" -log "$WORK/auth.log" -lines "$LINES" -seed "$SEED" \
		-cpu "$CPU" -fail2ban "$tree" -python "$PYTHON" "$@"
} | tee "$WORK/summary.txt"

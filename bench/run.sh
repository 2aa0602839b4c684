#!/usr/bin/env bash
# bench/run.sh: moat's HTTPS edge against nginx, Caddy and HAProxy, on this
# machine, in one run. See bench/README.md for the layout and the reasons.
#
#   sudo bench/run.sh [rounds] [duration]      defaults: 5 rounds, 10s
#
# Environment (all optional):
#   PROXIES="moat nginx nginx-nolock caddy haproxy go-tls"   which, in this order
#                              (go-tls: bare Go TLS server answering from memory)
#   SCENARIOS="hits bypass"    hits: /hot (cacheable), bypass: /nostore
#   CONNS=64                   wrk connections (wrk always runs one thread)
#   WARMUP=2s                  unmeasured wrk run before each measured one (0 to skip)
#   PROXY_CPU=0 LOAD_CPU=1     the proxy alone on PROXY_CPU; wrk, origin, curl on LOAD_CPU
#   PORT_BASE=18400            ports PORT_BASE..PORT_BASE+99 on 127.0.0.1
#   STRICT=1                   stop when a check before the measurement fails
#   FOREIGN_MAX=10 RETRIES=2   a run during which other processes took more than
#                              FOREIGN_MAX % of the two CPUs is run again, up to
#                              RETRIES times (the last attempt is kept, flagged)
#   MOAT_CACHE_TTL=3s MOAT_LIMIT=on   moat's cache TTL (0s: off) and limiter (off),
#                              to see what its layers cost
#
# Everything it writes is under bench/.work/: configs, the certificate, logs,
# wrk's raw output, results.csv and summary.txt. Everything it starts is
# stopped on exit, and leftovers of a crashed earlier run are stopped first.
# All traffic stays on 127.0.0.1.
set -Eeuo pipefail

ROUNDS=${1:-5}
DURATION=${2:-10s}
[[ $DURATION =~ ^[0-9]+$ ]] && DURATION=${DURATION}s
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "rounds must be a positive number, got '$ROUNDS'" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*[smh]$ ]] || { echo "duration must look like 10s, got '$DURATION'" >&2; exit 2; }

read -r -a PROXIES <<<"${PROXIES:-moat nginx nginx-nolock caddy haproxy go-tls}"
read -r -a SCENARIOS <<<"${SCENARIOS:-hits bypass}"
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2s}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-18400}
STRICT=${STRICT:-0}
FOREIGN_MAX=${FOREIGN_MAX:-10}
RETRIES=${RETRIES:-2}
# To see what moat's layers cost: MOAT_CACHE_TTL=0s turns its cache off,
# MOAT_LIMIT=off its rate limiter (the checks then fail, as they should).
MOAT_CACHE_TTL=${MOAT_CACHE_TTL:-3s}
MOAT_LIMIT=${MOAT_LIMIT:-on}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK=$HERE/.work
PIDS=$WORK/pids
HOST=bench.localhost
export PATH=$PATH:/usr/local/go/bin

ORIGIN_PORT=$PORT_BASE
# go-tls is no proxy but the yardstick: Go's net/http over TLS answering
# from memory (bench/gotls), the most a Go server can do on one core.
declare -A HTTPS_PORT=([moat]=$((PORT_BASE + 43)) [nginx]=$((PORT_BASE + 44)) [nginx-nolock]=$((PORT_BASE + 45)) [caddy]=$((PORT_BASE + 46)) [haproxy]=$((PORT_BASE + 47)) [go-tls]=$((PORT_BASE + 48)))
declare -A HTTP_PORT=([moat]=$((PORT_BASE + 80)) [nginx]=$((PORT_BASE + 81)) [nginx-nolock]=$((PORT_BASE + 82)) [caddy]=$((PORT_BASE + 83)) [haproxy]=$((PORT_BASE + 84)))
declare -A SCENARIO_PATH=([hits]=/hot [bypass]=/nostore)

# The security headers moat adds by default; every proxy is configured to
# add the same ones.
SECURITY_HEADERS=(
	"Strict-Transport-Security: max-age=31536000"
	"X-Content-Type-Options: nosniff"
	"X-Frame-Options: SAMEORIGIN"
	"Referrer-Policy: same-origin"
	"X-Permitted-Cross-Domain-Policies: none"
	"X-Download-Options: noopen"
)

# The limits: HUGE never triggers at any rate one core can reach (wrk's
# non-2xx count in results.csv shows it did not); LOW is used once, before
# the measurement, to show that the limiter is really in the request path.
HUGE_PER_SECOND=1000000
LOW_PER_MINUTE=5

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Processes: every one we start is recorded as "pid starttime" in
# $PIDS/NAME.pid, so that a later run stops exactly those, and never a
# process that merely reused the pid.

starttime() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }

record_pid() { # NAME PID
	local st
	st=$(starttime "$2") || return 0
	echo "$2 $st" >>"$PIDS/$1.pid"
}

stop_file() { # PIDFILE: TERM, wait up to 5 s, then KILL what is left
	local f=$1 pid st alive=()
	[[ -f $f ]] || return 0
	while read -r pid st; do
		[[ -n $pid && $(starttime "$pid" 2>/dev/null) == "$st" ]] || continue
		kill -TERM "$pid" 2>/dev/null && alive+=("$pid $st")
	done <"$f"
	for _ in $(seq 50); do
		local left=()
		for e in "${alive[@]}"; do
			read -r pid st <<<"$e"
			[[ $(starttime "$pid" 2>/dev/null) == "$st" ]] && left+=("$e")
		done
		alive=("${left[@]}")
		((${#alive[@]} == 0)) && break
		sleep 0.1
	done
	for e in "${alive[@]}"; do
		read -r pid st <<<"$e"
		log "process $pid did not stop on TERM: KILL"
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -f "$f"
}

stop() { stop_file "$PIDS/$1.pid"; }

stop_all() {
	local f
	shopt -s nullglob
	for f in "$PIDS"/*.pid; do stop_file "$f"; done
	shopt -u nullglob
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# A signal can arrive inside a redirected command (wrk's output file):
	# speak on the script's own stdout and stderr again.
	exec 1>&8 2>&7
	stop_all
	((rc == 0)) || log "stopped everything this run started (exit status $rc); logs are in $WORK/logs"
	exit "$rc"
}

start_bg() { # NAME [ENV=VALUE...] taskset -c CPU CMD...: start in the background, log to logs/NAME.log
	local name=$1
	shift
	# env execs taskset, which execs the program: $! is the program's pid.
	env "$@" >>"$WORK/logs/$name.log" 2>&1 </dev/null &
	record_pid "$name" $!
}

pid_of() { head -n1 "$PIDS/$1.pid" 2>/dev/null | cut -d' ' -f1; }

# proxy_pids NAME: the proxy's processes: the main one and its children
# (nginx's workers, cache manager and cache loader).
proxy_pids() {
	local p
	p=$(pid_of "$1") || return 0
	[[ -n $p ]] || return 0
	echo "$p"
	pgrep -P "$p" || true
}

wait_port() { # NAME PORT: until something accepts on 127.0.0.1:PORT
	local name=$1 port=$2
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
		local p
		p=$(pid_of "$name")
		if [[ -z $p || ! -d /proc/$p ]]; then
			tail -n 20 "$WORK/logs/$name.log" >&2 || true
			die "$name exited before listening on 127.0.0.1:$port (log above, $WORK/logs/$name.log)"
		fi
		sleep 0.1
	done
	tail -n 20 "$WORK/logs/$name.log" >&2 || true
	die "$name is not listening on 127.0.0.1:$port after 10 s"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------
# Setup.

preflight() {
	[[ $(id -u) == 0 ]] || die "run as root (sudo bench/run.sh): it installs packages and reads /proc of the proxies"
	local n
	n=$(nproc)
	((n >= 2)) || die "needs at least 2 CPUs (the proxy on one, wrk and the origin on the other); this machine has $n"
	for c in "$PROXY_CPU" "$LOAD_CPU"; do
		((c < n)) || die "CPU $c does not exist here (nproc=$n): set PROXY_CPU and LOAD_CPU"
	done
}

install_deps() {
	local -A pkg_of=([nginx]=nginx [caddy]=caddy [haproxy]=haproxy [wrk]=wrk [curl]=curl [taskset]=util-linux [openssl]=openssl)
	local missing=() cmd
	for cmd in "${!pkg_of[@]}"; do
		command -v "$cmd" >/dev/null || missing+=("${pkg_of[$cmd]}")
	done
	if ((${#missing[@]})); then
		log "installing ${missing[*]} (Debian packages)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/logs/apt.log" 2>&1 ||
			{ tail -n 20 "$WORK/logs/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
	fi
	if ! command -v go >/dev/null; then
		[[ -x $ROOT/scripts/install-go.sh ]] && "$ROOT/scripts/install-go.sh" >&2
		command -v go >/dev/null || die "no Go toolchain: run 'make toolchain' first"
	fi
}

build() {
	log "building moat and the origin"
	local version
	version=$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)
	(cd "$ROOT" && go build -trimpath -ldflags "-X main.version=$version" -o "$WORK/bin/moat" ./cmd/moat) ||
		die "go build ./cmd/moat failed (someone may be mid-edit in internal/: run again)"
	(cd "$ROOT" && go build -trimpath -o "$WORK/bin/origin" ./bench/origin) || die "go build ./bench/origin failed"
	(cd "$ROOT" && go build -trimpath -o "$WORK/bin/gotls" ./bench/gotls) || die "go build ./bench/gotls failed"
	(cd "$ROOT" && go build -trimpath -o "$WORK/bin/summary" ./bench/summary) || die "go build ./bench/summary failed"
	MOAT_VERSION=$version
}

# wrk resolves the URL's host itself; bench.localhost is not in /etc/hosts
# on every machine (and we leave /etc/hosts alone), so this script points it
# at 127.0.0.1. The URL keeps the name, so the TLS SNI and the Host header
# are bench.localhost. No request or response hook: wrk stays on its fast
# path.
write_wrk_script() {
	cat >"$WORK/resolve.lua" <<'EOF'
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end
EOF
}

# ---------------------------------------------------------------------------
# The certificate: moat in demo mode takes its certificates from its local
# CA (DATA/local-ca/root.crt + root.key, an EC P-256 root) and issues itself
# an EC P-256 leaf for bench.localhost. The other proxies get one leaf that
# this function issues with openssl from that same CA: EC P-256 key,
# ecdsa-with-SHA256, served as leaf + root like moat's chain. So every proxy
# does the same ECDSA P-256 signature per handshake, and curl verifies all of
# them against the same root.
issue_cert() {
	local ca=$WORK/moat/local-ca tls=$WORK/tls
	mkdir -p "$tls"
	[[ -s $ca/root.crt && -s $ca/root.key ]] || die "moat's demo CA is missing: $ca/root.crt, root.key"
	cp "$ca/root.crt" "$tls/root.crt"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/key.pem" 2>/dev/null
	openssl req -new -key "$tls/key.pem" -subj "/CN=$HOST" -out "$tls/leaf.csr" 2>/dev/null
	cat >"$tls/leaf.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:$HOST
EOF
	openssl x509 -req -in "$tls/leaf.csr" -CA "$ca/root.crt" -CAkey "$ca/root.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 7 -sha256 -extfile "$tls/leaf.ext" \
		-out "$tls/leaf.crt" 2>/dev/null || die "openssl could not issue the leaf from moat's demo CA"
	cat "$tls/leaf.crt" "$tls/root.crt" >"$tls/fullchain.pem"
	cat "$tls/fullchain.pem" "$tls/key.pem" >"$tls/haproxy.pem"
	chmod 600 "$tls/key.pem" "$tls/haproxy.pem"
	openssl verify -CAfile "$tls/root.crt" "$tls/leaf.crt" >/dev/null || die "the issued leaf does not verify against moat's root"
}

# ---------------------------------------------------------------------------
# Configs. Each proxy: TLS with the shared certificate on 127.0.0.1, an
# HTTP listener that redirects to HTTPS, the six security headers, a per-IP
# rate limit (RATE), an output cache of 3 s (not Caddy: it has none), no
# access log, keep-alive to the origin, one core.

# render_moat REQUESTS PER BURST
render_moat() {
	cat >"$WORK/moat.yaml" <<EOF
# moat's desired state for the benchmark, applied with 'moat apply -f'.
server:
  listen:
    http: 127.0.0.1:${HTTP_PORT[moat]}
    https: 127.0.0.1:${HTTPS_PORT[moat]}
    admin: 127.0.0.1:0   # metrics on an ephemeral loopback port, as the demo sets it
  access_log: "off"
  rate_limit:
    requests: $1
    per: $2
    burst: $3
    off: $([[ $MOAT_LIMIT == off ]] && echo true || echo false)
apps:
  - name: bench
    domains: [$HOST]
    upstream: http://127.0.0.1:$ORIGIN_PORT
    cache:
      ttl: $MOAT_CACHE_TTL
EOF
}

# render_nginx NAME LOCK(on|off) RATE BURST
render_nginx() {
	local name=$1 lock=$2 rate=$3 burst=$4 d=$WORK/$1 h hdrs=""
	mkdir -p "$d/cache" "$d/tmp"
	for h in "${SECURITY_HEADERS[@]}"; do
		hdrs+="            add_header ${h%%:*} \"${h#*: }\" always;"$'\n'
	done
	cat >"$d/nginx.conf" <<EOF
# nginx for the benchmark ($name): proxy_cache_lock $lock.
user root;
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;   # the default (1000) would close wrk's connections every few seconds
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;

    limit_req_zone \$binary_remote_addr zone=perip:10m rate=$rate;
    limit_req_status 429;

    proxy_cache_path $d/cache levels=1:2 keys_zone=bench:10m max_size=64m inactive=1m use_temp_path=off;
    # Cache for 3 s whatever max-age the origin says (moat's default), but
    # never what the origin marks no-store, private or no-cache.
    map \$upstream_http_cache_control \$no_store {
        default 0;
        ~*(no-store|private|no-cache) 1;
    }

    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:${HTTP_PORT[$name]};
        server_name $HOST;
        return 308 https://\$host:${HTTPS_PORT[$name]}\$request_uri;
    }

    server {
        listen 127.0.0.1:${HTTPS_PORT[$name]} ssl;
        server_name $HOST;
        ssl_certificate $WORK/tls/fullchain.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;

        limit_req zone=perip burst=$burst nodelay;

        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;

            proxy_cache bench;
            proxy_cache_key \$scheme\$host\$request_uri;
            proxy_cache_valid 200 301 404 410 3s;
            proxy_ignore_headers Cache-Control Expires;
            proxy_no_cache \$no_store \$http_authorization \$http_cookie;
            proxy_cache_bypass \$http_authorization \$http_cookie;
            proxy_cache_lock $lock;
            add_header X-Cache \$upstream_cache_status always;

$hdrs        }
    }
}
EOF
}

render_caddy() {
	local d=$WORK/caddy h hdrs=""
	mkdir -p "$d/data" "$d/config"
	for h in "${SECURITY_HEADERS[@]}"; do
		hdrs+="		${h%%:*} \"${h#*: }\""$'\n'
	done
	cat >"$d/Caddyfile" <<EOF
# Caddy for the benchmark: Debian's caddy has no rate limiter and no cache.
{
	admin off
	auto_https off
	storage file_system $d/data
}

https://$HOST:${HTTPS_PORT[caddy]} {
	bind 127.0.0.1
	tls $WORK/tls/fullchain.pem $WORK/tls/key.pem
	header {
$hdrs		-Server
	}
	reverse_proxy 127.0.0.1:$ORIGIN_PORT {
		transport http {
			keepalive_idle_conns_per_host 64
		}
	}
}

http://$HOST:${HTTP_PORT[caddy]} {
	bind 127.0.0.1
	redir https://{host}:${HTTPS_PORT[caddy]}{uri} 308
}
EOF
}

# render_haproxy LIMIT_PER_MINUTE
render_haproxy() {
	local d=$WORK/haproxy h hdrs=""
	mkdir -p "$d"
	for h in "${SECURITY_HEADERS[@]}"; do
		hdrs+="    http-response set-header ${h%%:*} \"${h#*: }\""$'\n'
	done
	cat >"$d/haproxy.cfg" <<EOF
# HAProxy for the benchmark: one thread, no log.
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

cache bench
    total-max-size 4
    max-object-size 16384
    max-age 3

frontend http
    bind 127.0.0.1:${HTTP_PORT[haproxy]}
    http-request redirect location https://%[req.hdr(host),field(1,:)]:${HTTPS_PORT[haproxy]}%[url] code 308

frontend https
    bind 127.0.0.1:${HTTPS_PORT[haproxy]} ssl crt $WORK/tls/haproxy.pem alpn h2,http/1.1
    stick-table type ip size 100k expire 60s store http_req_rate(60s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt $1 }
    http-request cache-use bench
    http-response cache-store bench
$hdrs    http-response del-header Server
    default_backend origin

backend origin
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
}

# ---------------------------------------------------------------------------
# Starting each proxy on PROXY_CPU.

moat_cli() { taskset -c "$LOAD_CPU" "$WORK/bin/moat" --data-dir "$WORK/moat" --socket "$WORK/moat/moat.sock" "$@"; }

start_moat() {
	mkdir -p "$WORK/moat"
	start_bg moat GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$WORK/bin/moat" serve --demo \
		--data-dir "$WORK/moat" --socket "$WORK/moat/moat.sock" \
		--https-addr "127.0.0.1:${HTTPS_PORT[moat]}" --http-addr "127.0.0.1:${HTTP_PORT[moat]}" --log-level warn
	wait_port moat "${HTTPS_PORT[moat]}"
	for _ in $(seq 50); do [[ -S $WORK/moat/moat.sock ]] && break; sleep 0.1; done
}

moat_apply() {
	moat_cli apply -f "$WORK/moat.yaml" >>"$WORK/logs/moat-apply.log" 2>&1 ||
		{ tail -n 20 "$WORK/logs/moat-apply.log" >&2; die "moat apply -f $WORK/moat.yaml failed"; }
}

start_nginx() { # NAME
	local d=$WORK/$1
	nginx -t -q -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" 2>>"$WORK/logs/$1.log" ||
		{ tail -n 20 "$WORK/logs/$1.log" >&2; die "nginx -t refused $d/nginx.conf"; }
	start_bg "$1" taskset -c "$PROXY_CPU" nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log"
	wait_port "$1" "${HTTPS_PORT[$1]}"
	# Its workers too, so that a later run can stop them even if the master
	# was killed.
	local c
	for c in $(pgrep -P "$(pid_of "$1")"); do record_pid "$1" "$c"; done
}

start_caddy() {
	local d=$WORK/caddy
	start_bg caddy GOMAXPROCS=1 HOME="$d" XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config" \
		taskset -c "$PROXY_CPU" caddy run --adapter caddyfile --config "$d/Caddyfile"
	wait_port caddy "${HTTPS_PORT[caddy]}"
}

start_haproxy() {
	local d=$WORK/haproxy
	haproxy -c -q -f "$d/haproxy.cfg" >>"$WORK/logs/haproxy.log" 2>&1 ||
		{ tail -n 20 "$WORK/logs/haproxy.log" >&2; die "haproxy -c refused $d/haproxy.cfg"; }
	start_bg haproxy taskset -c "$PROXY_CPU" haproxy -db -f "$d/haproxy.cfg"
	wait_port haproxy "${HTTPS_PORT[haproxy]}"
}

# start_proxy NAME low|huge: render its config with the low or the huge
# limit and start it.
start_proxy() {
	local name=$1 limit=$2
	case $name in
	moat)
		# moat takes its config live, through its socket. It is started
		# first (its CA signs everyone's certificate); main restarts it
		# between the limit check and the measurement, like the others.
		if [[ $limit == low ]]; then render_moat "$LOW_PER_MINUTE" minute "$LOW_PER_MINUTE"; else render_moat "$HUGE_PER_SECOND" second "$HUGE_PER_SECOND"; fi
		[[ -n $(pid_of moat) ]] || start_moat
		moat_apply
		;;
	nginx | nginx-nolock)
		local lock=on
		[[ $name == nginx-nolock ]] && lock=off
		if [[ $limit == low ]]; then
			render_nginx "$name" "$lock" "${LOW_PER_MINUTE}r/m" $((LOW_PER_MINUTE - 1))
		else
			# Without a burst, two requests in the same millisecond are
			# refused at any rate: nginx counts in milliseconds.
			render_nginx "$name" "$lock" "${HUGE_PER_SECOND}r/s" "$HUGE_PER_SECOND"
		fi
		start_nginx "$name"
		;;
	caddy)
		render_caddy
		start_caddy
		;;
	go-tls)
		start_bg go-tls GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$WORK/bin/gotls" -addr "127.0.0.1:${HTTPS_PORT[go-tls]}" \
			-cert "$WORK/tls/fullchain.pem" -key "$WORK/tls/key.pem"
		wait_port go-tls "${HTTPS_PORT[go-tls]}"
		;;
	haproxy)
		if [[ $limit == low ]]; then render_haproxy "$LOW_PER_MINUTE"; else render_haproxy $((HUGE_PER_SECOND * 60)); fi
		start_haproxy
		;;
	esac
}

config_of() {
	case $1 in
	moat) echo "$WORK/moat.yaml" ;;
	nginx | nginx-nolock) echo "$WORK/$1/nginx.conf" ;;
	caddy) echo "$WORK/caddy/Caddyfile" ;;
	haproxy) echo "$WORK/haproxy/haproxy.cfg" ;;
	go-tls) echo /dev/null ;;
	esac
}

# ---------------------------------------------------------------------------
# Checks before measuring: each proxy really redirects, sets the headers,
# caches, passes no-store through, and limits.

curl_https() { taskset -c "$LOAD_CPU" curl -sS --http1.1 --max-time 10 --cacert "$WORK/tls/root.crt" --resolve "$HOST:$1:127.0.0.1" "${@:2}"; }
origin_count() { curl -sS --max-time 5 "http://127.0.0.1:$ORIGIN_PORT/count" | awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }

declare -A VERDICT  # proxy -> "ok" or the failed checks
declare -A CHECKS   # proxy -> one line per check

check() { # PROXY OK(0|1) TEXT
	CHECKS[$1]+="    $([[ $2 == 1 ]] && echo ok || echo FAIL)  $3"$'\n'
	if [[ $2 != 1 ]]; then
		VERDICT[$1]+="${VERDICT[$1]:+, }${3%%:*}"
		log "check failed for $1: $3"
	fi
}

# check_limit NAME: with the low limit in place, 2×LOW requests on one
# connection: some must get 429.
check_limit() {
	local name=$1 https=${HTTPS_PORT[$1]} urls=() codes n429 n200
	if [[ $name == go-tls ]]; then
		CHECKS[$name]+="    n/a   limit, redirect, cache, no-store: the yardstick answers from memory (with the same six headers) and does nothing else"$'\n'
		return
	fi
	if [[ $name == caddy ]]; then
		local mods
		mods=$(caddy list-modules 2>/dev/null | grep -i -E 'rate|limit' | paste -sd, || true)
		CHECKS[$name]+="    n/a   limit: this caddy has no rate limiter (modules matching rate|limit in 'caddy list-modules': ${mods:-none})"$'\n'
		return
	fi
	for i in $(seq $((LOW_PER_MINUTE * 2))); do urls+=(-o /dev/null "https://$HOST:$https/nostore?limit=$i"); done
	# One curl, so one connection: the limiter sees one client.
	codes=$(curl_https "$https" -w '%{http_code}\n' "${urls[@]}" || true)
	n429=$(grep -c '^429$' <<<"$codes" || true)
	n200=$(grep -c '^200$' <<<"$codes" || true)
	check "$name" $((n429 > 0 && n200 > 0)) "limit: with a limit of $LOW_PER_MINUTE/minute, $((LOW_PER_MINUTE * 2)) requests got $n200×200 and $n429×429 (codes: $(tr '\n' ' ' <<<"$codes"))"
}

check_proxy() {
	local name=$1 https=${HTTPS_PORT[$1]} tag=$RANDOM$RANDOM out
	# TLS: the chain verifies against moat's root; the leaf's key is P-256.
	out=$(taskset -c "$LOAD_CPU" openssl s_client -connect "127.0.0.1:$https" -servername "$HOST" \
		-CAfile "$WORK/tls/root.crt" -verify_return_error -showcerts </dev/null 2>/dev/null || true)
	local proto curve verified
	proto=$(grep -m1 -E '^(New|Reused), ' <<<"$out" | sed 's/^[A-Za-z]*, //')
	curve=$(openssl x509 -noout -text 2>/dev/null <<<"$out" | grep -m1 -o 'NIST CURVE: P-256' || true)
	verified=$(grep -c 'Verify return code: 0 (ok)' <<<"$out" || true)
	check "$name" $((verified > 0)) "tls: $proto; leaf key ${curve:-not P-256}; chain verifies against moat's demo CA root: $([[ $verified -gt 0 ]] && echo yes || echo no)"
	[[ $name == go-tls ]] || check_proxy_work "$name" "$tag"
	check_layout "$name"
}

# check_proxy_work NAME TAG: what only a proxy does: redirect, headers,
# cache, pass-through.
check_proxy_work() {
	local name=$1 https=${HTTPS_PORT[$1]} http=${HTTP_PORT[$1]} tag=$2
	# Redirect.
	local red
	red=$(taskset -c "$LOAD_CPU" curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{redirect_url}' \
		--resolve "$HOST:$http:127.0.0.1" "http://$HOST:$http/hot?r=$tag" || true)
	local ok=0
	[[ $red =~ ^30[178]\ https://$HOST:$https/hot\?r=$tag$ ]] && ok=1
	check "$name" $ok "redirect: http://$HOST:$http/hot?r=$tag -> $red"
	# Headers and cache: two GETs of a fresh URL; the origin must see one.
	local before after h1 h2 hot_delta miss hit missing=()
	before=$(origin_count hot)
	h1=$(curl_https "$https" -D - -o /dev/null "https://$HOST:$https/hot?c=$tag" || true)
	h2=$(curl_https "$https" -D - -o /dev/null "https://$HOST:$https/hot?c=$tag" || true)
	after=$(origin_count hot)
	hot_delta=$((after - before))
	for h in "${SECURITY_HEADERS[@]}"; do
		grep -qi "^${h%%:*}:" <<<"$h1" && grep -qi "^${h%%:*}:" <<<"$h2" || missing+=("${h%%:*}")
	done
	local status1 status2
	status1=$(head -n1 <<<"$h1" | tr -d '\r')
	status2=$(head -n1 <<<"$h2" | tr -d '\r')
	check "$name" $((${#missing[@]} == 0)) "headers: $((${#SECURITY_HEADERS[@]} - ${#missing[@]}))/${#SECURITY_HEADERS[@]} security headers on both the first and the second answer${missing:+ (missing: ${missing[*]})}; $status1 / $status2"
	local server
	server=$(grep -i '^server:' <<<"$h2" | tr -d '\r' || true)
	[[ -n $server ]] && CHECKS[$name]+="    note  the answer carries '$server'"$'\n'
	miss=$(grep -i '^x-cache:' <<<"$h1" | tr -d '\r' | sed 's/^[^:]*: *//' || true)
	hit=$(grep -i '^x-cache:' <<<"$h2" | tr -d '\r' | sed 's/^[^:]*: *//' || true)
	if [[ $name == caddy ]]; then
		local mods
		mods=$(caddy list-modules 2>/dev/null | grep -i cache | paste -sd, || true)
		CHECKS[$name]+="    n/a   cache: this caddy has no cache (modules matching cache in 'caddy list-modules': ${mods:-none}); two GETs of /hot reached the origin $hot_delta times"$'\n'
	else
		check "$name" $((hot_delta == 1)) "cache: two GETs of /hot?c=$tag reached the origin $hot_delta time(s)${miss:+ (X-Cache: $miss, then $hit)}"
	fi
	# Bypass: /nostore must reach the origin every time, or the bypass
	# scenario would measure the cache.
	before=$(origin_count nostore)
	curl_https "$https" -o /dev/null -o /dev/null "https://$HOST:$https/nostore?b=$tag" "https://$HOST:$https/nostore?b=$tag" || true
	after=$(origin_count nostore)
	check "$name" $((after - before == 2)) "no-store: two GETs of /nostore reached the origin $((after - before)) time(s)"
}

# check_layout NAME: every process of the proxy pinned to PROXY_CPU, one
# worker, one thread, or GOMAXPROCS=1.
check_layout() {
	local name=$1 pids pins threads gmp="" pp
	pids=$(proxy_pids "$name")
	pins=$(for pp in $pids; do awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$pp/status"; done | sort -u | paste -sd,)
	threads=$(for pp in $pids; do awk '/^Threads:/ {print $2}' "/proc/$pp/status"; done | paste -sd+)
	case $name in
	moat | caddy | go-tls) gmp="; $(tr '\0' '\n' <"/proc/$(pid_of "$name")/environ" | grep '^GOMAXPROCS=' || echo 'GOMAXPROCS unset')" ;;
	nginx*) gmp="; $(for pp in $pids; do tr '\0' ' ' <"/proc/$pp/cmdline"; echo; done | grep -c 'worker process') worker process(es)" ;;
	esac
	check "$name" "$([[ $pins == "$PROXY_CPU" ]] && echo 1 || echo 0)" "cpu: $(wc -w <<<"$pids") process(es), OS threads $threads, allowed CPUs: $pins$gmp"
}

origin_total() { curl -sS --max-time 5 "http://127.0.0.1:$ORIGIN_PORT/count" | awk '{print $2 + $4}'; }

# ---------------------------------------------------------------------------
# Measuring.

to_ms() { # wrk prints 812.00us, 1.23ms, 1.02s, 2.00m
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}

reset_hwm() { local p; for p in $(proxy_pids "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
peak_rss_kb() {
	local p sum=0 v
	for p in $(proxy_pids "$1"); do
		v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# cpu_ticks CPU: "busy total" jiffies of one CPU since boot (busy: user, nice,
# system, irq, softirq, steal; not idle or iowait).
cpu_ticks() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
busy_pct() { # "busy total" before, after
	awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; v = t > 0 ? 100 * (y[1] - x[1]) / t : 0; printf "%.0f", v}'
}

# our_ticks PROXY: CPU time (clock ticks) used so far by the proxy, the
# origin, and this script's finished children (wrk, curl, awk). What the two
# CPUs did besides is someone else's load, or the kernel's softirq work
# (a few percent): foreign_pct shows runs that something else disturbed.
our_ticks() {
	local p s t=0
	for p in $(proxy_pids "$1") $(pid_of origin); do
		s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		s=${s##*) }
		set -- $s
		t=$((t + ${12} + ${13}))
	done
	s=$(cat /proc/$$/stat)
	s=${s##*) }
	set -- $s
	echo $((t + ${14} + ${15}))
}
foreign_pct() { # cpu0 before, after, cpu1 before, after, ours before, after
	awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" -v o1="$5" -v o2="$6" 'BEGIN {
		split(a, w, " "); split(b, x, " "); split(c, y, " "); split(d, z, " ")
		busy = x[1] - w[1] + z[1] - y[1]; total = x[2] - w[2] + z[2] - y[2]
		v = total > 0 ? 100 * (busy - (o2 - o1)) / total : 0; if (v < 0) v = 0
		printf "%.0f", v }'
}

wrk_run() { # PROXY PATH DURATION [--latency] > output
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$3" ${4:-} -s "$WORK/resolve.lua" "https://$HOST:${HTTPS_PORT[$1]}$2"
}

measure() { # ROUND SCENARIO PROXY POSITION
	local round=$1 scen=$2 name=$3 pos=$4 path=${SCENARIO_PATH[$2]} attempt out
	[[ -n $(pid_of "$name") && -d /proc/$(pid_of "$name") ]] || die "$name is no longer running (log: $WORK/logs/$name.log)"
	for attempt in $(seq $((RETRIES + 1))); do
		out=$WORK/wrk/r$round-$scen-$name-$attempt.txt
		[[ $WARMUP == 0 || $WARMUP == 0s ]] || wrk_run "$name" "$path" "$WARMUP" >/dev/null 2>&1 || true
		reset_hwm "$name"
		local started o1 o2 c0 c1 c0b c1b t0 t1
		started=$(date -u +%FT%TZ)
		o1=$(origin_total)
		t0=$(our_ticks "$name")
		c0=$(cpu_ticks "$PROXY_CPU")
		c1=$(cpu_ticks "$LOAD_CPU")
		wrk_run "$name" "$path" "$DURATION" --latency >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed against $name"; }
		c0b=$(cpu_ticks "$PROXY_CPU")
		c1b=$(cpu_ticks "$LOAD_CPU")
		t1=$(our_ticks "$name")
		o2=$(origin_total)
		local rss nproc rps p50 p99 total non2xx errs busy0 busy1 foreign
		rss=$(peak_rss_kb "$name")
		nproc=$(proxy_pids "$name" | wc -l)
		rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
		p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
		p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
		total=$(awk '/ requests in / {print $1}' "$out")
		non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
		errs=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out")
		busy0=$(busy_pct "$c0" "$c0b")
		busy1=$(busy_pct "$c1" "$c1b")
		foreign=$(foreign_pct "$c0" "$c0b" "$c1" "$c1b" "$t0" "$t1")
		[[ -n $rps ]] || { cat "$out" >&2; die "no Requests/sec in wrk's output for $name"; }
		log "$(printf 'round %d %-6s %-13s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  peak RSS %6.1f MB  CPUs busy %s%%/%s%%, foreign %s%%%s' \
			"$round" "$scen" "$name" "$rps" "$p50" "$p99" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$busy0" "$busy1" "$foreign" \
			"$([[ ${non2xx:-0} != 0 || ${errs:-0} != 0 ]] && echo "  non-2xx ${non2xx:-0} errors ${errs:-0}")")"
		# Another process took a share of the CPUs: the run measured the
		# neighbour too. Wait a little and run it again (RETRIES times).
		if ((foreign > FOREIGN_MAX && attempt <= RETRIES)); then
			log "  disturbed: ${foreign}% of the CPUs went to other processes; again in 5 s"
			sleep 5
			continue
		fi
		echo "$round,$scen,$name,$pos,$attempt,$rps,$p50,$p99,$rss,$nproc,$total,$((o2 - o1)),${non2xx:-0},${errs:-0},$busy0,$busy1,$foreign,$DURATION,$started" >>"$WORK/results.csv"
		return
	done
}

# ---------------------------------------------------------------------------

main() {
	preflight
	mkdir -p "$WORK" "$PIDS"
	# Leftovers of an earlier run that crashed or was killed.
	stop_all
	exec 7>&2 8>&1
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	rm -rf "$WORK/logs" "$WORK/wrk" "$WORK/moat" "$WORK/tls" "$WORK/nginx" "$WORK/nginx-nolock" "$WORK/caddy" "$WORK/haproxy"
	mkdir -p "$WORK/logs" "$WORK/wrk"

	local p
	for p in "${PROXIES[@]}"; do
		[[ -n ${HTTPS_PORT[$p]:-} ]] || die "unknown proxy '$p' in PROXIES (known: moat nginx nginx-nolock caddy haproxy)"
	done
	for p in "$ORIGIN_PORT" "${HTTPS_PORT[@]}" "${HTTP_PORT[@]}"; do
		port_free "$p" || die "127.0.0.1:$p is in use: stop what listens there or set PORT_BASE"
	done

	install_deps
	build
	write_wrk_script

	log "starting the origin on CPU $LOAD_CPU"
	start_bg origin taskset -c "$LOAD_CPU" "$WORK/bin/origin" -addr "127.0.0.1:$ORIGIN_PORT"
	wait_port origin "$ORIGIN_PORT"

	# moat first: its demo CA signs the certificate every proxy serves.
	log "starting moat (demo mode: its local CA issues the certificates)"
	render_moat "$HUGE_PER_SECOND" second "$HUGE_PER_SECOND"
	start_moat
	issue_cert

	# The checks: first with a low limit (does the limiter answer 429?),
	# then the benchmark's config, which differs in the limit only, from a
	# fresh start (no limiter state left over), checked again.
	for p in "${PROXIES[@]}"; do
		log "checking $p"
		CHECKS[$p]=""
		VERDICT[$p]=""
		start_proxy "$p" low
		cp "$(config_of "$p")" "$WORK/logs/$p.low-limit.conf"
		check_limit "$p"
		stop "$p"
		start_proxy "$p" huge
		local d
		d=$(diff "$WORK/logs/$p.low-limit.conf" "$(config_of "$p")" | grep '^[<>]' | tr -s ' ' | sed 's/;$//' | paste -sd'|' | sed 's/|/ | /g' || true)
		[[ -n $d ]] && CHECKS[$p]+="    info  the measured config differs from the limit-checked one only in: $d"$'\n'
		check_proxy "$p"
		[[ -z ${VERDICT[$p]} || $STRICT == 0 ]] || die "$p failed: ${VERDICT[$p]} (STRICT=1)"
	done

	{
		echo "moat benchmark, $(date -u '+%F %H:%M UTC')"
		echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
		[[ $MOAT_CACHE_TTL == 3s && $MOAT_LIMIT == on ]] || echo "moat's layers changed for this run: cache ttl $MOAT_CACHE_TTL, rate limit $MOAT_LIMIT"
		echo "layout: proxy alone on CPU $PROXY_CPU; wrk (-t1 -c$CONNS, keep-alive, HTTPS) and the origin on CPU $LOAD_CPU"
		echo "runs: $ROUNDS rounds × $DURATION (+ $WARMUP warm-up each), proxies rotated within each round; a run during which other processes took over $FOREIGN_MAX% of the CPUs is repeated (up to $RETRIES times)"
		echo "versions: moat $MOAT_VERSION ($(go version | cut -d' ' -f3)); $(nginx -v 2>&1 | cut -d' ' -f3); caddy $(caddy version | cut -d' ' -f1); haproxy $(haproxy -v | head -n1 | cut -d' ' -f3); wrk $(wrk -v 2>&1 | head -n1 | cut -d' ' -f2)"
		echo
		echo "checks before measuring (with curl and openssl on 127.0.0.1):"
		for p in "${PROXIES[@]}"; do
			if [[ -n ${VERDICT[$p]} ]]; then echo "  $p: FAILED: ${VERDICT[$p]}"; else echo "  $p: all checks passed"; fi
			printf '%s' "${CHECKS[$p]}"
		done
	} >"$WORK/meta.txt"
	cat "$WORK/meta.txt" >&2

	echo "round,scenario,proxy,position,attempt,requests_per_sec,p50_ms,p99_ms,peak_rss_kb,proxy_processes,requests,origin_requests,non_2xx_3xx,socket_errors,proxy_cpu_busy_pct,load_cpu_busy_pct,foreign_cpu_pct,duration,started_at" >"$WORK/results.csv"
	local round scen i n=${#PROXIES[@]}
	for round in $(seq "$ROUNDS"); do
		for scen in "${SCENARIOS[@]}"; do
			[[ -n ${SCENARIO_PATH[$scen]:-} ]] || die "unknown scenario '$scen' (known: hits bypass)"
			# Rotate the order each round, so no proxy always runs first
			# or right after the same neighbour.
			for i in $(seq 0 $((n - 1))); do
				p=${PROXIES[$(((i + round - 1) % n))]}
				measure "$round" "$scen" "$p" $((i + 1))
			done
		done
	done

	{
		cat "$WORK/meta.txt"
		"$WORK/bin/summary" -disturbed "$FOREIGN_MAX" -proxies "$(
			IFS=,
			echo "${PROXIES[*]}"
		)" "$WORK/results.csv"
		echo
		echo "req/s, p50, p99, to origin and CPU busy are medians over the clean (undisturbed) runs; peak RSS is the highest VmHWM over all runs, summed over the proxy's processes;"
		echo "moat÷proxy is the median of moat's per-round ratios of req/s over the rounds where both runs were clean (above 1: moat served more)."
		echo "to origin: requests that reached the origin ÷ requests wrk completed (a hair over 100% when nothing is cached: wrk does not count the requests in flight at the end)."
		echo "CPU busy proxy/load: how busy CPU $PROXY_CPU (the proxy) and CPU $LOAD_CPU (wrk and the origin) were; the one near 100% was the bottleneck."
		echo "raw: $WORK/results.csv, wrk output: $WORK/wrk/"
	} | tee "$WORK/summary.txt"
}

main "$@"

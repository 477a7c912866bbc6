#!/usr/bin/env bash
# Gateway benchmark (`make bench-gateway`): flotilla's gateway against nginx and HAProxy as reverse
# proxies, side by side in one run, in front of the same fast backend. The markdown it writes is
# meant for docs/benchmarks.md.
#
#   backend   nginx, 1 worker, `return 200 "hello\n"` from memory, on a free loopback port
#   proxies   nginx (upstream keepalive 64), HAProxy (http-reuse always), flotilla (`flotilla up`),
#             each with 1 worker / 1 thread and keep-alive to the backend
#   1. throughput: ROUNDS rounds, interleaved (nginx haproxy flotilla nginx haproxy flotilla ...),
#      `wrk -t1 -cN -dDURATION --latency` at 64 and then 8 connections; per proxy the median of the
#      rounds: req/s, p50, p99, the proxy's CPU seconds (utime+stime from /proc, all its threads
#      and processes), requests per proxy CPU-second; flotilla's ratios to nginx and HAProxy, as
#      ratios of the medians and round by round (the median of the per-round ratios, and in how
#      many rounds flotilla was better); each run also shows the CPU the hypervisor took (steal)
#   2. 2 workers: fresh proxies with 2 workers (nginx worker_processes 2, haproxy nbthread 2,
#      flotilla workers: 2), ROUNDS interleaved rounds at 64 connections, medians as in 1; then
#      ROUNDS more with a new connection per request (wrk -H "Connection: close"; the proxies keep
#      their backend connections alive)
#   3. idle keep-alive: fresh 1-worker proxies; IDLE_CONNS connections (each answered one GET, then
#      held open) and the proxy's VmRSS before and after: KiB per connection (flotilla's target:
#      <= 10 KiB)
# Prints a table and writes it as markdown to RESULTS (bench/gateway/results-latest.md).
#
# Every load is bounded (wrk under `timeout`, the idle client has its own deadlines), everything
# listens on 127.0.0.1 only, and everything the script started is stopped by PID on exit, Ctrl-C or
# failure. The proxies are started by this script with its own configs in a temp dir (never the
# system nginx/haproxy services). flotilla is skipped, with a message, when build/flotilla has no
# `up` command yet.
#
# Knobs (environment): DURATION (10, seconds per wrk run), ROUNDS (3), WARMUP (2, seconds per
# proxy), IDLE_CONNS (10000), CONNS ("64 8"), SKIP_WORKERS2=1, SKIP_CLOSE=1, SKIP_IDLE=1, SKIP_FLOTILLA=1,
# RESULTS (bench/gateway/results-latest.md), BENCH_KEEP=1 keeps the temp dir (configs, logs, raw
# wrk output), FLOTILLA_BUILD_DIR (build), PEER_HEADERS (plain | same; see below).
#
# PEER_HEADERS: flotilla always adds X-Forwarded-For/-Proto/-Host, X-Real-IP, an X-Request-Id (when
# the client sent none) and a new traceparent to every request it forwards. With `plain` (the default)
# nginx and HAProxy pass requests on as they are, so the backend parses ~200 bytes less per request
# behind them. With `same` they are configured to send the same fields (nginx: proxy_set_header
# with $request_id; HAProxy: option forwardfor, set-header with %[uuid]), so all three proxies do
# the same work and the backend sees requests of the same size.
#
# Exit status: 0 when it ran (with flotilla: its idle memory within target and no wrong answers or
# socket errors anywhere), 1 when a target or a check failed, 2 when the benchmark could not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${FLOTILLA_BUILD_DIR:-$ROOT/build}
BIN=$BUILD/flotilla
DURATION=${DURATION:-10}
DURATION=${DURATION%s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
WARMUP=${WARMUP%s}
IDLE_CONNS=${IDLE_CONNS:-10000}
CONNS_LIST=${CONNS:-64 8}
RESULTS=${RESULTS:-$ROOT/bench/gateway/results-latest.md}
IDLE_TARGET_KIB=10
PEER_HEADERS=${PEER_HEADERS:-plain}
PY=/usr/bin/python3
NGINX=/usr/sbin/nginx
HAPROXY=/usr/sbin/haproxy
TICKS=$(getconf CLK_TCK)
NCPU=$(nproc)

# shellcheck source=bench/gateway/lib.sh
. "$ROOT/bench/gateway/lib.sh"

command -v wrk >/dev/null || die "wrk is not installed (make deps)"
command -v curl >/dev/null || die "curl is not installed (make deps)"
[[ -x $PY ]] || die "$PY is missing"
[[ -x $NGINX ]] || die "$NGINX is missing (make deps installs Debian's nginx)"
[[ -x $HAPROXY ]] || die "$HAPROXY is missing (make deps installs Debian's haproxy)"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "DURATION must be whole seconds, not '$DURATION'"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "ROUNDS must be a positive number"
[[ $PEER_HEADERS == plain || $PEER_HEADERS == same ]] || die "PEER_HEADERS must be plain or same, not '$PEER_HEADERS'"

# flotilla takes part only when its binary has `up` (the gateway is being written).
FLOTILLA=1
FLOTILLA_WHY=
if [[ ${SKIP_FLOTILLA:-0} == 1 ]]; then
  FLOTILLA=0; FLOTILLA_WHY="SKIP_FLOTILLA=1"
elif [[ ! -x $BIN ]]; then
  FLOTILLA=0; FLOTILLA_WHY="$BIN is missing (make build)"
elif ! "$BIN" --help 2>/dev/null | grep -E '^[[:space:]]+up([[:space:]]|$)' >/dev/null; then  # listed as a subcommand
  FLOTILLA=0; FLOTILLA_WHY="$BIN has no 'up' command yet"
fi
PROXIES=(nginx haproxy)
(( FLOTILLA )) && PROXIES+=(flotilla)

# Open files: the idle client and each proxy hold IDLE_CONNS sockets. Raise the soft limit to the
# hard one (the proxies inherit it); with too low a hard limit, hold fewer idle connections.
HARD=$(ulimit -Hn)
[[ $HARD == unlimited ]] && HARD=1048576
ulimit -n "$HARD" 2>/dev/null || HARD=$(ulimit -n)
if (( IDLE_CONNS + 300 > HARD )); then
  echo "bench: open-files hard limit is $HARD: holding $(( HARD - 300 )) idle connections instead of $IDLE_CONNS" >&2
  IDLE_CONNS=$(( HARD - 300 ))
fi
PROXY_FDS=$(( HARD < 65536 ? HARD : 65536 ))   # what the proxies may open
NGINX_CONNS=$(( PROXY_FDS - 100 ))              # worker_connections (client + upstream sockets)
MAXCONN=$(( IDLE_CONNS + 200 ))                 # HAProxy maxconn, flotilla gateway.max_connections

# Anything else using the CPUs skews every number: measure it for a second before starting.
s0=$(machine); sleep 1; OTHERS=$(busy "$s0" "$(machine)")

make_work flotilla-gwbench

start_backend() {
  PORT[backend]=$(free_port)
  nginx_common backend 1 >"$WORK/backend.conf"
  cat >>"$WORK/backend.conf" <<EOF
  server {
    listen 127.0.0.1:${PORT[backend]} backlog=4096;
    location / { default_type text/plain; return 200 "hello\n"; }
  }
}
EOF
  start_nginx backend "$WORK/backend.conf"
}

start_proxy_nginx() {  # start_proxy_nginx WORKERS
  PORT[nginx]=$(free_port)
  nginx_common nginx "$1" >"$WORK/nginx-proxy.conf"
  cat >>"$WORK/nginx-proxy.conf" <<EOF
  upstream backend {
    server 127.0.0.1:${PORT[backend]};
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
EOF
  if [[ $PEER_HEADERS == same ]]; then
    cat >>"$WORK/nginx-proxy.conf" <<'EOF'
  map $http_x_request_id $bench_request_id { "" $request_id; default $http_x_request_id; }
  map $request_id $bench_span_id { "~^(?<s>.{16})" $s; }
EOF
  fi
  cat >>"$WORK/nginx-proxy.conf" <<EOF
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
EOF
  if [[ $PEER_HEADERS == same ]]; then
    cat >>"$WORK/nginx-proxy.conf" <<'EOF'
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Request-Id $bench_request_id;
      proxy_set_header traceparent "00-$request_id-$bench_span_id-01";
EOF
  fi
  cat >>"$WORK/nginx-proxy.conf" <<EOF
    }
  }
}
EOF
  start_nginx nginx "$WORK/nginx-proxy.conf"
}

start_proxy_haproxy() {  # start_proxy_haproxy THREADS
  local dir=$WORK/haproxy
  mkdir -p "$dir"
  PORT[haproxy]=$(free_port)
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread $1
  maxconn $MAXCONN
  ulimit-n $PROXY_FDS
  # HAProxy wants 2 sockets per connection and refuses to start when maxconn*2 exceeds the FD
  # limit (20,000 here); idle clients share a few backend connections (http-reuse always), so the
  # IDLE_CONNS client connections fit: a warning instead of a refusal.
  no strict-limits
  pidfile $dir/haproxy.pid
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  maxconn $MAXCONN
  default_backend be
backend be
  server backend 127.0.0.1:${PORT[backend]}
EOF
  if [[ $PEER_HEADERS == same ]]; then
    cat >>"$WORK/haproxy.cfg" <<'EOF'
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Request-Id %[uuid,regsub(-,,g)] unless { req.hdr(x-request-id) -m found }
  http-request set-var(txn.trace) uuid,regsub(-,,g)
  http-request set-header traceparent 00-%[var(txn.trace)]-%[var(txn.trace),bytes(0,16)]-01
EOF
  fi
  "$HAPROXY" -f "$WORK/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
  PID[haproxy]=$!
  wait_ready haproxy "$dir/haproxy.log"
}

start_proxy_flotilla() {  # start_proxy_flotilla WORKERS
  local dir=$WORK/flotilla api
  rm -rf "$dir"
  mkdir -p "$dir"
  PORT[flotilla]=$(free_port)
  api=$(free_port)
  cat >"$dir/flotilla.yaml" <<EOF
name: bench
agent: { api: 127.0.0.1:$api, data_dir: $dir/data }
gateway:
  listen: [127.0.0.1:${PORT[flotilla]}]
  workers: $1
  max_connections: $MAXCONN
  routes:
    - match: { path_prefix: / }
      service: backend
EOF
  # max_connections (default 10,000 per worker) only where this build knows the key.
  if ! "$BIN" config check -f "$dir/flotilla.yaml" >"$dir/check.log" 2>&1; then
    grep -q max_connections "$dir/check.log" && sed -i '/max_connections/d' "$dir/flotilla.yaml"
    "$BIN" config check -f "$dir/flotilla.yaml" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; die "flotilla rejects the benchmark's flotilla.yaml"; }
  fi
  "$BIN" up -f "$dir/flotilla.yaml" >"$dir/flotilla.log" 2>&1 &
  PID[flotilla]=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$api/v1/status/leader" >/dev/null 2>&1 && break
    kill -0 "${PID[flotilla]}" 2>/dev/null || { log_tail "$dir/flotilla.log"; die "flotilla up exited at start-up"; }
    sleep 0.1
  done
  curl -sf -o /dev/null -X PUT --max-time 5 \
    -d "{\"Name\":\"backend\",\"ID\":\"backend-1\",\"Address\":\"127.0.0.1\",\"Port\":${PORT[backend]}}" \
    "http://127.0.0.1:$api/v1/agent/service/register" || { log_tail "$dir/flotilla.log"; die "cannot register the backend with flotilla's agent on 127.0.0.1:$api"; }
  wait_ready flotilla "$dir/flotilla.log"
}

start_proxy() {  # start_proxy NAME WORKERS
  case $1 in
    nginx) start_proxy_nginx "$2" ;;
    haproxy) start_proxy_haproxy "$2" ;;
    flotilla) start_proxy_flotilla "$2" ;;
  esac
}

# --- wrk ---

declare -A RES   # RES[proxy,conns,round] = "rps requests p50 p99 errors cpu_s req_per_cpu_s other_cpu_s stolen_cpu_s"
ERRORS=0
run_wrk() {  # run_wrk NAME CONNS SECONDS KEY ("" for a warm-up) [WRK ARGS...]
  local name=$1 conns=$2 secs=$3 key=$4 out pid t0 b0 w0 m0 m1 t1 line cpu bcpu wcpu others steal rps n p50 p99 err
  shift 4
  out=$WORK/wrk-$name-c$conns-${key:-warmup}.txt
  out=${out//,/-}
  pid=${PID[$name]}
  t0=$(cpu_ticks "$pid"); b0=$(cpu_ticks "${PID[backend]}"); w0=$(cpu_children); m0=$(machine)
  run_child "$out" $(( secs + 30 )) wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s --latency "$@" "http://127.0.0.1:${PORT[$name]}/"
  t1=$(cpu_ticks "$pid"); m1=$(machine)
  (( CHILD_RC == 0 )) || { cat "$out" >&2; die "wrk against $name failed (exit $CHILD_RC)"; }
  kill -0 "$pid" 2>/dev/null || die "$name died during the load"
  [[ -n $key ]] || return 0
  line=$(parse_wrk "$out")
  read -r rps n p50 p99 err <<<"$line"
  cpu=$(awk -v a="$t0" -v b="$t1" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
  bcpu=$(awk -v a="$b0" -v b="$(cpu_ticks "${PID[backend]}")" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
  wcpu=$(awk -v a="$w0" -v b="$(cpu_children)" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
  steal=$(stolen "$m0" "$m1")
  others=$(awk -v m="$(busy "$m0" "$m1")" -v s="$secs" -v c="$cpu" -v b="$bcpu" -v w="$wcpu" -v st="$steal" \
    'BEGIN { o = m / 100 * s - c - b - w - st; if (o < 0) o = 0; printf "%.2f", o }')
  RES[$key]="$rps $n $p50 $p99 $err $cpu $(awk -v n="$n" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0) ? n / c : 0 }') $others $steal"
  (( err == 0 )) || ERRORS=1
  printf '    %-9s c=%-3s %8s req/s  p50 %7.3f ms  p99 %7.3f ms  CPU s: proxy %5s backend %5s wrk %5s other %5s stolen %5s%s\n' \
    "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" "$bcpu" "$wcpu" "$others" "$steal" "$( (( err == 0 )) || echo "  ERRORS: $err")"
}

# med PROXY CONNS FIELD ROUNDS: median of one column over the rounds (fields: 1 rps 2 requests
# 3 p50 4 p99 5 errors 6 cpu 7 req/cpu-s)
med() {
  local r
  for r in $(seq "$4"); do
    [[ -n ${RES[$1,$2,$r]:-} ]] && echo "${RES[$1,$2,$r]}" | awk -v f="$3" '{ print $f }'
  done | median
}
errsum() {
  local r t=0
  for r in $(seq "$3"); do t=$(( t + $(echo "${RES[$1,$2,$r]:-0 0 0 0 0}" | awk '{ print $5 }') )); done
  echo "$t"
}
# Round by round: every round runs the proxies back to back, so the ratio within a round cancels
# most of the host's drift between rounds. paired OTHER CONNS FIELD ROUNDS LOWER_IS_BETTER prints
# "MEDIAN_RATIO WINS N": the median of flotilla's per-round ratios to OTHER, and in how many of the
# N rounds flotilla was better.
paired() {
  local r a b ratios wins=0 n=0 x
  ratios=$(for r in $(seq "$4"); do
    a=${RES[flotilla,$2,$r]:-}; b=${RES[$1,$2,$r]:-}
    [[ -n $a && -n $b ]] || continue
    awk -v a="$(echo "$a" | awk -v f="$3" '{ print $f }')" -v b="$(echo "$b" | awk -v f="$3" '{ print $f }')" \
      'BEGIN { if (b > 0) printf "%.6f\n", a / b }'
  done)
  for x in $ratios; do
    n=$(( n + 1 ))
    if awk -v x="$x" -v low="$5" 'BEGIN { exit !((low && x < 1) || (!low && x > 1)) }'; then wins=$(( wins + 1 )); fi
  done
  if (( n == 0 )); then echo "n/a 0 0"; else echo "$(printf '%s\n' $ratios | median | awk '{ printf "%.2f", $1 }') $wins $n"; fi
}

# --- header ---

NGINX_V=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
HAPROXY_V=$("$HAPROXY" -v 2>&1 | awk 'NR == 1 { print $1 " " $3 }')
HEADER=(
  "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  "machine:  $NCPU CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  "proxies:  $NGINX_V, $HAPROXY_V, $(if (( FLOTILLA )); then
    echo "flotilla $BIN (built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
      [[ -n $(git -C "$ROOT" status --porcelain -- src 2>/dev/null) ]] && echo ' + uncommitted changes in src/'))"
    else echo "flotilla SKIPPED: $FLOTILLA_WHY"; fi)"
  "backend:  nginx, 1 worker, return 200 \"hello\\n\" (6-byte body), 127.0.0.1"
  "headers:  PEER_HEADERS=$PEER_HEADERS: $(if [[ $PEER_HEADERS == same ]]; then echo "nginx and HAProxy add the X-Forwarded-*, X-Request-Id and traceparent fields flotilla adds"; else echo "nginx and HAProxy pass requests on as they are; flotilla adds X-Forwarded-*, X-Request-Id, traceparent"; fi)"
  "load:     wrk -t1 -c{${CONNS_LIST// /,}} -d${DURATION}s --latency, rounds: $ROUNDS, interleaved; wrk, backend and proxy share the $NCPU CPUs"
  "before:   machine ${OTHERS}% busy with other work (100 = one CPU), load average $(cut -d' ' -f1-3 /proc/loadavg)"
)
echo "== flotilla gateway benchmark: flotilla vs nginx vs HAProxy as reverse proxies"
printf '%s\n' "${HEADER[@]}"
(( OTHERS < 10 )) || echo "WARNING:  other processes are using the CPUs; every number will be lower and noisier"
(( FLOTILLA )) || echo "NOTE:     flotilla is skipped, nginx and HAProxy are measured alone"
echo "Absolute numbers are for this machine only ($NCPU CPUs shared by load generator, backend and proxy); compare the proxies with each other."
echo

# --- 1. throughput, 1 worker ---

start_backend
for p in "${PROXIES[@]}"; do start_proxy "$p" 1; done
echo "-- 1/3 throughput, 1 worker each: rounds: $ROUNDS, interleaved, ${DURATION}s per run"
echo "    warm-up: ${WARMUP}s each"
for p in "${PROXIES[@]}"; do run_wrk "$p" 64 "$WARMUP" ""; done
for c in $CONNS_LIST; do
  for r in $(seq "$ROUNDS"); do
    echo "    round $r/$ROUNDS, $c connections"
    for p in "${PROXIES[@]}"; do run_wrk "$p" "$c" "$DURATION" "$p,$c,$r"; done
  done
done
echo "    reference: the backend directly, no proxy (what a proxy can at best approach)"
for c in $CONNS_LIST; do run_wrk backend "$c" "$DURATION" "backend,$c,1"; done
for p in "${PROXIES[@]}"; do stop_instance "$p"; done

# --- 2. throughput, 2 workers ---

if [[ ${SKIP_WORKERS2:-0} != 1 ]]; then
  echo "-- 2/3 throughput, 2 workers each (nginx worker_processes 2, HAProxy nbthread 2, flotilla workers: 2), 64 connections$(
    [[ ${SKIP_CLOSE:-0} == 1 ]] || echo ", kept alive and then one request per connection")"
  for p in "${PROXIES[@]}"; do start_proxy "$p" 2; done
  for p in "${PROXIES[@]}"; do run_wrk "$p" 64 "$WARMUP" ""; done
  for r in $(seq "$ROUNDS"); do
    echo "    round $r/$ROUNDS, 64 connections, 2 workers"
    for p in "${PROXIES[@]}"; do run_wrk "$p" 64 "$DURATION" "$p,w2,$r"; done
  done
  if [[ ${SKIP_CLOSE:-0} != 1 ]]; then
    # Clients without keep-alive: every request on a new connection (the proxies keep theirs to
    # the backend). This is where accepting, and flotilla handing connections between workers,
    # costs the most per request.
    for r in $(seq "$ROUNDS"); do
      echo "    round $r/$ROUNDS, 64 connections, 2 workers, a new connection per request (Connection: close)"
      for p in "${PROXIES[@]}"; do run_wrk "$p" 64 "$DURATION" "$p,close,$r" -H "Connection: close"; done
    done
  fi
  for p in "${PROXIES[@]}"; do stop_instance "$p"; done
fi

# --- 3. idle keep-alive connections ---

declare -A IDLE   # IDLE[proxy] = "rss_before_kib rss_after_kib answered failed closed kib_per_conn"
IDLE_FAIL=0
if [[ ${SKIP_IDLE:-0} != 1 ]]; then
  echo "-- 3/3 idle keep-alive: $IDLE_CONNS connections, one GET answered on each, then held open; fresh 1-worker proxies"
  for p in "${PROXIES[@]}"; do
    start_proxy "$p" 1
    for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:${PORT[$p]}/"; done  # upstream connection open
    sleep 0.5
    before=$(rss_kib "${PID[$p]}")
    ready=$WORK/idle-$p.ready stop=$WORK/idle-$p.stop
    timeout --kill-after=5 200 "$PY" "$ROOT/bench/gateway/idle_conns.py" "${PORT[$p]}" "$IDLE_CONNS" "$ready" "$stop" 120 \
      >"$WORK/idle-$p.txt" 2>&1 &
    CHILD=$!
    for _ in $(seq 900); do [[ -f $ready ]] && break; kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
    [[ -f $ready ]] || { cat "$WORK/idle-$p.txt" >&2; die "the idle client against $p did not get ready"; }
    sleep 1  # let the proxy settle (nothing is sent meanwhile)
    after=$(rss_kib "${PID[$p]}")
    touch "$stop"
    CHILD_RC=0; wait "$CHILD" || CHILD_RC=$?; CHILD=
    (( CHILD_RC == 0 )) || { cat "$WORK/idle-$p.txt" >&2; die "the idle client against $p failed (exit $CHILD_RC)"; }
    answered=$(sed -n 's/.*answered=\([0-9]*\).*/\1/p' "$WORK/idle-$p.txt")
    failed=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' "$WORK/idle-$p.txt")
    closed=$(sed -n 's/.*closed_by_server=\([0-9]*\).*/\1/p' "$WORK/idle-$p.txt")
    per=$(awk -v a="$before" -v b="$after" -v n="${answered:-0}" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')
    IDLE[$p]="$before $after ${answered:-0} ${failed:-?} ${closed:-?} $per"
    printf '    %-9s answered %s, failed %s, closed by the proxy while held %s; VmRSS %.1f -> %.1f MiB: %s KiB per connection\n' \
      "$p" "${answered:-?}" "${failed:-?}" "${closed:-?}" "$(awk -v k="$before" 'BEGIN { print k / 1024 }')" \
      "$(awk -v k="$after" 'BEGIN { print k / 1024 }')" "$per"
    [[ ${answered:-0} == "$IDLE_CONNS" && ${closed:-1} == 0 ]] || IDLE_FAIL=1
    stop_instance "$p"
  done
fi
echo

# --- the tables ---

MD=()      # markdown lines
TXT=()     # text lines
conns_label() {
  local what="$1 connections, 1 worker"
  [[ $1 == w2 ]] && what="64 connections, 2 workers"
  [[ $1 == close ]] && what="64 connections, 2 workers, a new connection per request"
  if (( ROUNDS == 1 )); then echo "$what, 1 round"
  else echo "$what, median of $ROUNDS rounds"; fi
}
table() {  # table CONNS ROUNDS
  local c=$1 n=$2 p rps p50 p99 cpu rpc err
  TXT+=("$(conns_label "$c")")
  TXT+=("$(printf '  %-20s %10s %9s %9s %12s %13s %7s' proxy req/s "p50 ms" "p99 ms" "proxy CPU s" "req/CPU-s" errors)")
  MD+=("" "**$(conns_label "$c")**" "" "| proxy | req/s | p50 ms | p99 ms | proxy CPU s | req per proxy CPU-s | errors |" "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  for p in "${PROXIES[@]}" backend; do
    [[ $p == backend && ( $c == w2 || $c == close ) ]] && continue
    local rr=$n; [[ $p == backend ]] && rr=1
    rps=$(med "$p" "$c" 1 "$rr"); p50=$(med "$p" "$c" 3 "$rr"); p99=$(med "$p" "$c" 4 "$rr")
    cpu=$(med "$p" "$c" 6 "$rr"); rpc=$(med "$p" "$c" 7 "$rr"); err=$(errsum "$p" "$c" "$rr")
    local label=$p; [[ $p == backend ]] && label="(backend, no proxy)"
    [[ $p == backend ]] && { cpu="-"; rpc="-"; }
    [[ $cpu == - ]] || { cpu=$(printf '%.2f' "$cpu"); rpc=$(printf '%.0f' "$rpc"); }
    TXT+=("$(printf '  %-20s %10.0f %9.3f %9.3f %12s %13s %7s' "$label" "$rps" "$p50" "$p99" "$cpu" "$rpc" "$err")")
    MD+=("| $label | $(printf '%.0f' "$rps") | $(printf '%.3f' "$p50") | $(printf '%.3f' "$p99") | $cpu | $rpc | $err |")
  done
  if (( FLOTILLA )); then
    local o r1 r2 r3
    for o in nginx haproxy; do
      r1=$(ratio "$(med flotilla "$c" 1 "$n")" "$(med "$o" "$c" 1 "$n")")
      r2=$(ratio "$(med flotilla "$c" 7 "$n")" "$(med "$o" "$c" 7 "$n")")
      r3=$(ratio "$(med flotilla "$c" 4 "$n")" "$(med "$o" "$c" 4 "$n")")
      TXT+=("$(printf '  flotilla / %-8s req/s x%s, req per CPU-s x%s, p99 x%s (p99: lower is better)' "$o" "$r1" "$r2" "$r3")")
      local q1 q2 q3
      read -r -a q1 <<<"$(paired "$o" "$c" 1 "$n" 0)"
      read -r -a q2 <<<"$(paired "$o" "$c" 7 "$n" 0)"
      read -r -a q3 <<<"$(paired "$o" "$c" 4 "$n" 1)"
      TXT+=("$(printf '    round by round:  req/s x%s (better in %s of %s rounds), req per CPU-s x%s (%s of %s), p99 x%s (%s of %s)' \
        "${q1[0]}" "${q1[1]}" "${q1[2]}" "${q2[0]}" "${q2[1]}" "${q2[2]}" "${q3[0]}" "${q3[1]}" "${q3[2]}")")
      RATIOS+=("| $(conns_label "$c" | sed 's/, median.*//; s/, 1 round//') | $o | $r1 | $r2 | $r3 | ${q1[0]}, ${q2[0]}, ${q3[0]} | ${q1[1]}, ${q2[1]}, ${q3[1]} of ${q1[2]} |")
    done
  fi
  TXT+=("")
}
RATIOS=()
# How much CPU other work (builds, tests) took during the measured runs: it lowers every number.
OTHER_CPU=$(for k in "${!RES[@]}"; do echo "${RES[$k]}" | awk '{ print $8 }'; done | median)
OTHER_NOTE=$(awk -v o="$OTHER_CPU" -v d="$DURATION" 'BEGIN { printf "other processes used %.0f%% of a CPU during the median measured run (%.2f CPU s of %d s)%s", o / d * 100, o, d, (o / d > 0.1) ? ": the machine was not idle, the numbers are lower and noisier than they would be" : "" }')
STEAL_MED=$(for k in "${!RES[@]}"; do echo "${RES[$k]}" | awk '{ print $9 }'; done | median)
STEAL_MAX=$(for k in "${!RES[@]}"; do echo "${RES[$k]}" | awk '{ print $9 }'; done | sort -g | tail -1)
OTHER_NOTE="$OTHER_NOTE; the hypervisor took $(awk -v s="$STEAL_MED" -v d="$DURATION" 'BEGIN { printf "%.0f%%", s / d * 100 }') of a CPU from this VM in the median run (steal, $STEAL_MED CPU s of $DURATION s; the most in one run: $STEAL_MAX)"
TXT+=("$OTHER_NOTE" "")
MD+=("" "Machine during the runs: $OTHER_NOTE.")
for c in $CONNS_LIST; do table "$c" "$ROUNDS"; done
[[ ${SKIP_WORKERS2:-0} == 1 ]] || table w2 "$ROUNDS"
[[ ${SKIP_WORKERS2:-0} == 1 || ${SKIP_CLOSE:-0} == 1 ]] || table close "$ROUNDS"
if (( FLOTILLA )); then
  MD+=("" "**flotilla's ratios** (req/s and req per CPU-s: higher is better; p99: lower is better)" ""
       "| run | vs | req/s | req per proxy CPU-s | p99 | round by round: median ratios (req/s, req per CPU-s, p99) | rounds flotilla was better in |"
       "| --- | --- | ---: | ---: | ---: | --- | --- |" "${RATIOS[@]}")
fi
if [[ ${SKIP_IDLE:-0} != 1 ]]; then
  TXT+=("idle keep-alive connections ($IDLE_CONNS held, 1 worker; flotilla's target <= $IDLE_TARGET_KIB KiB)")
  TXT+=("$(printf '  %-10s %11s %11s %9s %7s %9s %10s' proxy "RSS before" "RSS after" answered failed closed "KiB/conn")")
  MD+=("" "**$IDLE_CONNS idle keep-alive connections** (1 worker; VmRSS of all the proxy's processes; flotilla's target ≤ $IDLE_TARGET_KIB KiB per connection)" ""
       "| proxy | VmRSS before (MiB) | VmRSS after (MiB) | answered | closed while held | KiB per connection |" "| --- | ---: | ---: | ---: | ---: | ---: |")
  for p in "${PROXIES[@]}"; do
    read -r b a n f cl per <<<"${IDLE[$p]}"
    TXT+=("$(printf '  %-10s %7.1f MiB %7.1f MiB %9s %7s %9s %10s' "$p" "$(awk -v k="$b" 'BEGIN { print k / 1024 }')" \
      "$(awk -v k="$a" 'BEGIN { print k / 1024 }')" "$n" "$f" "$cl" "$per")")
    MD+=("| $p | $(awk -v k="$b" 'BEGIN { printf "%.1f", k / 1024 }') | $(awk -v k="$a" 'BEGIN { printf "%.1f", k / 1024 }') | $n | $cl | $per |")
  done
  if (( FLOTILLA )); then
    fper=$(echo "${IDLE[flotilla]}" | awk '{ print $6 }')
    verdict=$(awk -v v="$fper" -v t="$IDLE_TARGET_KIB" 'BEGIN { print (v != "n/a" && v <= t) ? "PASS" : "FAIL" }')
    [[ $verdict == PASS ]] || IDLE_FAIL=1
    TXT+=("  flotilla: $fper KiB per connection, target <= $IDLE_TARGET_KIB KiB: $verdict")
  fi
  TXT+=("  (nginx and HAProxy allocate their connection tables at start, so \"before\" already holds part of their cost)")
  TXT+=("")
fi

printf '%s\n' "${TXT[@]}"
{
  echo "# Gateway benchmark results"
  echo
  echo '```'
  printf '%s\n' "${HEADER[@]}"
  echo '```'
  echo
  echo "Generated by \`bash bench/gateway/run.sh\`. Absolute numbers are for this machine: wrk, the backend"
  echo "and the proxy share its $NCPU CPUs. CPU s = user+system seconds of all the proxy's threads and"
  echo "processes during the ${DURATION}s wrk run; every column is the median over the rounds on its own."
  echo "flotilla's CPU seconds and VmRSS include its registry agent, which runs in the same process."
  (( FLOTILLA )) || { echo; echo "flotilla was skipped: $FLOTILLA_WHY."; }
  printf '%s\n' "${MD[@]}"
} >"$RESULTS"
echo "markdown written to $RESULTS"

STATUS=0
if (( ERRORS )); then echo "SOME RUNS HAD WRONG ANSWERS OR SOCKET ERRORS (see the errors column)"; STATUS=1; fi
if (( IDLE_FAIL )); then echo "IDLE CONNECTIONS: not all were answered and held, or flotilla missed its memory target"; STATUS=1; fi
(( FLOTILLA )) || echo "flotilla was SKIPPED: $FLOTILLA_WHY"
exit $STATUS

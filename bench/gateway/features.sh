#!/usr/bin/env bash
# What each gateway feature costs (`make bench-gateway-features`): `flotilla up` with one change (B)
# against the same `flotilla up` without it (A), in interleaved rounds, in front of the same fast
# backend. The markdown it writes is meant for docs/benchmarks.md ("What the features cost").
#
#   backend   nginx, 1 worker, `return 200 "hello\n"` from memory on INSTANCES (200) free loopback
#             ports, and /64k: a 64 KiB file (open_file_cache, sendfile: from the page cache)
#   A         `flotilla up`, gateway.workers: 1, one route (path_prefix /) to the service `backend`
#             with one instance (the backend's first port); started once, used by every row
#   B         a fresh `flotilla up` per row, the same file with one change (ROWS below):
#               access_log           access_log: a file
#               rate_limit           the route has rate_limit { key: client_ip } that never refuses
#               path_routes_1000     1000 path_prefix routes before the one that matches
#               path_routes_4000     4000 of them
#               host_routes_1000     1000 host routes before it
#               header_routes_1000   1000 header-match routes before it
#               round_robin_200      200 instances, load_balancer: round_robin
#               least_request_200    ... least_request
#               random_200           ... random
#               ring_hash_200        ... ring_hash, hash_on: header:x-user (*)
#               maglev_200           ... maglev, hash_on: header:x-user (*)
#               fields_40            A's file; requests with 40 fields, 4 KiB of them cookies
#               body_64k             A's file; GET /64k, a 64 KiB answer
#               workers_2            workers: 2; A and B at CONNS_W2 (64) connections
#             (*) wrk sends a new x-user value with every request (a counter, a Lua script); A gets
#             the same requests in those rows
#   method    per row: B started, its config checked (`flotilla config check`; a refused file ends
#             the run with flotilla's error), its endpoints and balancer confirmed in
#             /v1/flotilla/gateway, one request through A and B checked (200, body size); a warm-up
#             (WARMUP s each); then ROUNDS rounds A B A B ... of `wrk -t1 -cCONNS -dDURATION`.
#             Per run: req/s and the gateway's CPU seconds (utime+stime of the `flotilla up`
#             process, all threads, from /proc/PID/stat, delta over the run), CPU per request.
#             Per row: the median over the rounds of B/A within each round (req/s, and CPU per
#             request), the medians of the absolute values, and every non-2xx/3xx answer and socket
#             error wrk reported (warm-ups included): a row with errors says so and the exit
#             status is 1.
# Prints a table and writes it as markdown to RESULTS (bench/gateway/features-latest.md).
#
# Every load is bounded (wrk under `timeout`), everything listens on 127.0.0.1 only on free ports,
# and everything the script started is stopped by PID on exit, Ctrl-C or failure (never by name).
# The flotilla binary is copied into the temp dir first, so a rebuild during the run changes
# nothing. Helpers shared with run.sh are in lib.sh.
#
# Knobs (environment): DURATION (5, seconds per wrk run), ROUNDS (3), WARMUP (2, seconds per
# gateway per row), CONNS (32), CONNS_W2 (64, the workers_2 row), ONLY (comma-separated row names,
# e.g. ONLY=access_log,maglev_200), RESULTS (bench/gateway/features-latest.md), BENCH_KEEP=1 keeps
# the temp dir (every flotilla.yaml, logs, raw wrk output), FLOTILLA_BUILD_DIR (build).
#
# Exit status: 0 when it ran without errors, 1 when some run had wrong answers or socket errors,
# 2 when the benchmark could not run (a refused config, a process that did not start, ...).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${FLOTILLA_BUILD_DIR:-$ROOT/build}
BIN=$BUILD/flotilla
DURATION=${DURATION:-5}
DURATION=${DURATION%s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
WARMUP=${WARMUP%s}
CONNS=${CONNS:-32}
CONNS_W2=${CONNS_W2:-64}
ONLY=${ONLY:-}
RESULTS=${RESULTS:-$ROOT/bench/gateway/features-latest.md}
INSTANCES=200
PY=/usr/bin/python3
NGINX=/usr/sbin/nginx
TICKS=$(getconf CLK_TCK)
NCPU=$(nproc)

# shellcheck source=bench/gateway/lib.sh
. "$ROOT/bench/gateway/lib.sh"

ROWS=(access_log rate_limit path_routes_1000 path_routes_4000 host_routes_1000 header_routes_1000
      round_robin_200 least_request_200 random_200 ring_hash_200 maglev_200 fields_40 body_64k workers_2)

command -v wrk >/dev/null || die "wrk is not installed (make deps)"
command -v curl >/dev/null || die "curl is not installed (make deps)"
[[ -x $PY ]] || die "$PY is missing"
[[ -x $NGINX ]] || die "$NGINX is missing (make deps installs Debian's nginx)"
[[ -x $BIN ]] || die "$BIN is missing (make build)"
for v in DURATION ROUNDS WARMUP CONNS CONNS_W2; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive whole number, not '${!v}'"
done
SELECTED=()
if [[ -n $ONLY ]]; then
  IFS=, read -r -a want <<<"$ONLY"
  for w in "${want[@]}"; do
    [[ -z $w ]] && continue
    [[ " ${ROWS[*]} " == *" $w "* ]] || die "ONLY: no row '$w'; the rows: ${ROWS[*]}"
    SELECTED+=("$w")
  done
  (( ${#SELECTED[@]} )) || die "ONLY names no row; the rows: ${ROWS[*]}"
else
  SELECTED=("${ROWS[@]}")
fi

HARD=$(ulimit -Hn)
[[ $HARD == unlimited ]] && HARD=1048576
PROXY_FDS=$(( HARD < 4096 ? HARD : 4096 ))   # the backend: INSTANCES listeners and a few hundred connections
NGINX_CONNS=$(( PROXY_FDS - 100 ))

# Anything else using the CPUs skews every number: measure it for a second before starting.
s0=$(machine); sleep 1; OTHERS=$(busy "$s0" "$(machine)")

make_work flotilla-gwfeatures
# Every gateway of the run is this copy: a rebuild of build/flotilla meanwhile changes nothing.
FLOTILLA=$WORK/flotilla
cp "$BIN" "$FLOTILLA"
"$FLOTILLA" --version >/dev/null 2>&1 || die "$BIN does not run (is it being rebuilt? try again when the build is done)"

# N loopback ports free at once (bound together, so they are distinct), one a line.
free_ports() {  # free_ports N
  $PY -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# --- the backend: one nginx worker on INSTANCES ports ---

BPORTS=()
start_backend() {
  mapfile -t BPORTS < <(free_ports "$INSTANCES")
  (( ${#BPORTS[@]} == INSTANCES )) || die "could not find $INSTANCES free ports"
  PORT[backend]=${BPORTS[0]}
  nginx_common backend 1 >"$WORK/backend.conf"
  mkdir -p "$WORK/backend/www"
  head -c 65536 /dev/urandom >"$WORK/backend/www/64k"
  chmod 644 "$WORK/backend/www/64k"
  {
    echo "  open_file_cache max=16;"
    echo "  sendfile on;"
    echo "  server {"
    for p in "${BPORTS[@]}"; do echo "    listen 127.0.0.1:$p backlog=4096;"; done
    cat <<EOF
    location / { default_type text/plain; return 200 "hello\n"; }
    location = /64k { default_type application/octet-stream; root $WORK/backend/www; }
  }
}
EOF
  } >>"$WORK/backend.conf"
  start_nginx backend "$WORK/backend.conf"
  local got
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 2 "http://127.0.0.1:${BPORTS[$(( INSTANCES - 1 ))]}/64k") || true
  [[ $got == "200 65536" ]] || { log_tail "$WORK/backend/error.log"; die "the backend's /64k on its last port answers '$got', not 200 with 65536 bytes"; }
}

# --- the rows ---

# shellcheck disable=SC2016  # the labels are markdown: `...` is code, not a command
# row_setup NAME sets what B changes (and what the load is) for the row NAME.
row_setup() {
  LABEL=""; B_WORKERS=1; B_GATEWAY=""; B_ROUTES_KIND=""; B_ROUTES_N=0; B_ROUTE=""; B_SERVICE=""
  B_INSTANCES=1; B_LB=round_robin; B_PATH=/; B_BYTES=6; ROW_CONNS=$CONNS; WRK_BOTH=(); WRK_B=()
  case $1 in
    access_log) LABEL='`access_log` to a file'; B_GATEWAY="  access_log: access.log" ;;
    rate_limit) LABEL='`rate_limit` (client_ip, never refusing)'
      B_ROUTE="      rate_limit: { requests_per_second: 1000000000, burst: 1000000000, key: client_ip }" ;;
    path_routes_1000|path_routes_4000) B_ROUTES_KIND=path; B_ROUTES_N=${1##*_}
      LABEL="$B_ROUTES_N \`path_prefix\` routes before the one that matches" ;;
    host_routes_1000) B_ROUTES_KIND=host; B_ROUTES_N=1000; LABEL='1000 `host` routes before the one that matches' ;;
    header_routes_1000) B_ROUTES_KIND=header; B_ROUTES_N=1000; LABEL='1000 header-match routes before the one that matches' ;;
    round_robin_200|least_request_200|random_200|ring_hash_200|maglev_200)
      B_INSTANCES=$INSTANCES; B_LB=${1%_200}
      B_SERVICE="    load_balancer: $B_LB"
      LABEL="$INSTANCES instances, $B_LB"
      if [[ $B_LB == ring_hash || $B_LB == maglev ]]; then
        B_SERVICE+=$'\n'"    hash_on: header:x-user"
        LABEL+=' (`hash_on: header:x-user`, a new value per request, A gets it too)'
        WRK_BOTH=(-s "$WORK/x-user.lua")
      fi ;;
    fields_40) LABEL='40 request fields with 4 KiB of cookies (A'"'"'s config)'; WRK_B=("${FIELDS[@]}") ;;
    body_64k) LABEL='a 64 KiB answer body (A'"'"'s config)'; B_PATH=/64k; B_BYTES=65536 ;;
    workers_2) LABEL="\`workers: 2\`, $CONNS_W2 connections (A: 1 worker, $CONNS_W2 connections)"
      B_WORKERS=2; ROW_CONNS=$CONNS_W2 ;;
    *) die "no row $1" ;;
  esac
}

# For ring_hash / maglev: a different x-user on every request.
cat >"$WORK/x-user.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, { ["x-user"] = "user-" .. n })
end
EOF

# fields_40: Host (wrk's) + a 4096-byte Cookie + 38 more fields = 40 request fields.
FIELDS=()
cookie=""
for i in $(seq 16); do
  cookie+="${cookie:+; }c$i=$(printf 'v%.0s' $(seq 240))"
done
cookie=${cookie:0:4096}
while (( ${#cookie} < 4096 )); do cookie+=v; done
FIELDS+=(-H "Cookie: $cookie")
for i in $(seq 38); do FIELDS+=(-H "X-Bench-Field-$i: value-$i-abcdefghijklmnopqrstuvwxyz"); done

# flotilla_yaml NAME WORKERS CHANGED: GWDIR[NAME]/flotilla.yaml for A (CHANGED=0) or the row's B (1).
flotilla_yaml() {
  local dir=${GWDIR[$1]} workers=$2 changed=$3 i
  {
    cat <<EOF
name: bench
agent: { api: 127.0.0.1:${API[$1]}, data_dir: $dir/data }
gateway:
  listen: [127.0.0.1:${PORT[$1]}]
  workers: $workers
EOF
    (( changed )) && [[ -n $B_GATEWAY ]] && echo "$B_GATEWAY"
    echo "  routes:"
    if (( changed )); then
      for (( i = 1; i <= B_ROUTES_N; i++ )); do
        case $B_ROUTES_KIND in
          path) echo "    - { match: { path_prefix: /svc-$i }, service: backend }" ;;
          host) echo "    - { match: { host: svc-$i.example.com }, service: backend }" ;;
          header) echo "    - { match: { headers: { x-tenant: t$i } }, service: backend }" ;;
        esac
      done
    fi
    echo "    - match: { path_prefix: / }"
    echo "      service: backend"
    (( changed )) && [[ -n $B_ROUTE ]] && echo "$B_ROUTE"
    if (( changed )) && [[ -n $B_SERVICE ]]; then
      echo "services:"
      echo "  backend:"
      echo "$B_SERVICE"
    fi
  } >"$dir/flotilla.yaml"
}

# What the gateway NAME says about the service backend: "LOADBALANCER ENDPOINTS", then how many
# endpoints have served requests, the fewest and the most requests an endpoint served.
gateway_view() {  # gateway_view NAME
  curl -s --max-time 2 "http://127.0.0.1:${API[$1]}/v1/flotilla/gateway" 2>/dev/null | $PY -c '
import json, sys
try:
    s = json.load(sys.stdin)["Services"]["backend"]
    r = [e.get("Requests", 0) for e in s.get("Endpoints", [])] or [0]
    print(s.get("LoadBalancer", "?"), len(s.get("Endpoints", [])), sum(1 for x in r if x > 0), min(r), max(r))
except Exception:
    print("? 0 0 0 0")' || echo "? 0 0 0 0"
}

declare -A API GWDIR
# start_gateway NAME DIR WORKERS INSTANCES CHANGED: `flotilla up` in WORK/DIR as PID[NAME], its
# gateway on PORT[NAME], its agent on API[NAME], the backend's first INSTANCES ports registered.
start_gateway() {
  local name=$1 dir=$WORK/$2 workers=$3 n=$4 changed=$5 i view='' what=$1
  (( changed )) && what="$name, row $ROW"
  GWDIR[$name]=$dir
  rm -rf "$dir"
  mkdir -p "$dir"
  PORT[$name]=$(free_port)
  API[$name]=$(free_port)
  flotilla_yaml "$name" "$workers" "$changed"
  "$FLOTILLA" config check -f "$dir/flotilla.yaml" >"$dir/check.log" 2>&1 || {
    sed 's/^/  /' "$dir/check.log" >&2
    die "flotilla config check refuses $dir/flotilla.yaml ($what)"
  }
  "$FLOTILLA" up -f "$dir/flotilla.yaml" >"$dir/flotilla.log" 2>&1 &
  PID[$name]=$!
  for _ in $(seq 300); do
    curl -sf --max-time 1 "http://127.0.0.1:${API[$name]}/v1/status/leader" >/dev/null 2>&1 && break
    kill -0 "${PID[$name]}" 2>/dev/null || { log_tail "$dir/flotilla.log"; die "flotilla up ($name) exited at start-up"; }
    sleep 0.1
  done
  for (( i = 0; i < n; i++ )); do
    curl -sf -o /dev/null -X PUT --max-time 5 \
      -d "{\"Name\":\"backend\",\"ID\":\"backend-$(( i + 1 ))\",\"Address\":\"127.0.0.1\",\"Port\":${BPORTS[$i]}}" \
      "http://127.0.0.1:${API[$name]}/v1/agent/service/register" \
      || { log_tail "$dir/flotilla.log"; die "cannot register instance $(( i + 1 )) of the backend with $name's agent on 127.0.0.1:${API[$name]}"; }
  done
  # The gateway follows the registry: wait until it routes to all n instances with the policy asked.
  for _ in $(seq 100); do
    view=$(gateway_view "$name" | cut -d' ' -f1-2)
    [[ $view == "${B_LB_WANT:-round_robin} $n" ]] && break
    kill -0 "${PID[$name]}" 2>/dev/null || { log_tail "$dir/flotilla.log"; die "flotilla up ($name) exited"; }
    sleep 0.1
  done
  [[ $view == "${B_LB_WANT:-round_robin} $n" ]] || { log_tail "$dir/flotilla.log"; die "$name's gateway shows '$view' for the backend (balancer, endpoints), not '${B_LB_WANT:-round_robin} $n'"; }
  wait_ready "$name" "$dir/flotilla.log"
}

check_answer() {  # check_answer NAME PATH BYTES: one GET through the gateway is 200 with BYTES bytes
  local got
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "http://127.0.0.1:${PORT[$1]}$2") || true
  [[ $got == "200 $3" ]] || { log_tail "${GWDIR[$1]}/flotilla.log"; die "GET $2 through $1 answers '$got', not '200 $3'"; }
}

# --- wrk ---

# wrk's output -> "non2xx socket" (non-2xx/3xx answers; connect+read+write+timeout errors).
wrk_errors() {
  awk '/Non-2xx or 3xx responses:/ { n += $NF }
    /Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
    END { printf "%d %d\n", n, s }' "$1"
}

declare -A RES   # RES[row,A|B,round] = "rps requests non2xx socket cpu_s cpu_us_per_request other_cpu_s stolen_cpu_s"
declare -A WERR  # WERR[row,A|B] = "non2xx socket" summed over all runs, warm-ups included
ERRORS=0
run_wrk() {  # run_wrk ROW NAME CONNS SECONDS PATH KEY ("" for a warm-up) [WRK ARGS...]
  local row=$1 name=$2 conns=$3 secs=$4 path=$5 key=$6 out pid t0 b0 w0 m0 m1 t1 cpu bcpu wcpu others steal
  local rps n non2xx sock us prev
  shift 6
  out=$WORK/wrk-$row-$name-${key:-warmup}.txt
  out=${out//,/-}
  pid=${PID[$name]}
  t0=$(cpu_ticks "$pid"); b0=$(cpu_ticks "${PID[backend]}"); w0=$(cpu_children); m0=$(machine)
  run_child "$out" $(( secs + 30 )) wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s "$@" "http://127.0.0.1:${PORT[$name]}$path"
  t1=$(cpu_ticks "$pid"); m1=$(machine)
  (( CHILD_RC == 0 )) || { cat "$out" >&2; die "wrk against $name ($row) failed (exit $CHILD_RC)"; }
  kill -0 "$pid" 2>/dev/null || { log_tail "${GWDIR[$name]}/flotilla.log"; die "$name died during the load ($row)"; }
  read -r non2xx sock <<<"$(wrk_errors "$out")"
  read -r -a prev <<<"${WERR[$row,$name]:-0 0}"
  WERR[$row,$name]="$(( prev[0] + non2xx )) $(( prev[1] + sock ))"
  if (( non2xx + sock )); then
    ERRORS=1
    [[ -n $key ]] || echo "    $name warm-up: ERRORS: $non2xx non-2xx/3xx answers, $sock socket errors (see $out)"
  fi
  [[ -n $key ]] || return 0
  read -r rps n _ _ _ <<<"$(parse_wrk "$out")"
  cpu=$(awk -v a="$t0" -v b="$t1" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
  bcpu=$(awk -v a="$b0" -v b="$(cpu_ticks "${PID[backend]}")" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
  wcpu=$(awk -v a="$w0" -v b="$(cpu_children)" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
  steal=$(stolen "$m0" "$m1")
  others=$(awk -v m="$(busy "$m0" "$m1")" -v s="$secs" -v c="$cpu" -v b="$bcpu" -v w="$wcpu" -v st="$steal" \
    'BEGIN { o = m / 100 * s - c - b - w - st; if (o < 0) o = 0; printf "%.2f", o }')
  us=$(awk -v n="$n" -v c="$cpu" 'BEGIN { printf "%.2f", (n > 0) ? c * 1e6 / n : 0 }')
  RES[$row,$key]="$rps $n $non2xx $sock $cpu $us $others $steal"
  printf '    %s c=%-3s %8s req/s  gateway CPU %5s s = %6s us/req  backend %5s wrk %5s other %5s stolen %5s%s\n' \
    "$name" "$conns" "$rps" "$cpu" "$us" "$bcpu" "$wcpu" "$others" "$steal" \
    "$( (( non2xx + sock == 0 )) || echo "  ERRORS: $non2xx non-2xx/3xx, $sock socket")"
}

field() { awk -v f="$1" '{ print $f }'; }
# row_result ROW: "A_rps B_rps rps_ratio A_us B_us us_ratio": medians of the rounds; the ratios are
# the medians of B/A within each round.
row_result() {
  local row=$1 r a b
  local ar br au bu rr ur
  ar=$(for r in $(seq "$ROUNDS"); do echo "${RES[$row,A,$r]}" | field 1; done | median)
  br=$(for r in $(seq "$ROUNDS"); do echo "${RES[$row,B,$r]}" | field 1; done | median)
  au=$(for r in $(seq "$ROUNDS"); do echo "${RES[$row,A,$r]}" | field 6; done | median)
  bu=$(for r in $(seq "$ROUNDS"); do echo "${RES[$row,B,$r]}" | field 6; done | median)
  rr=$(for r in $(seq "$ROUNDS"); do
    a=$(echo "${RES[$row,A,$r]}" | field 1); b=$(echo "${RES[$row,B,$r]}" | field 1)
    awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.6f\n", b / a }'
  done | median)
  ur=$(for r in $(seq "$ROUNDS"); do
    a=$(echo "${RES[$row,A,$r]}" | field 6); b=$(echo "${RES[$row,B,$r]}" | field 6)
    awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.6f\n", b / a }'
  done | median)
  echo "$ar $br ${rr:-0} $au $bu ${ur:-0}"
}
errors_text() {  # errors_text ROW: "0", or what wrk counted against B and A
  local b a
  read -r -a b <<<"${WERR[$1,B]:-0 0}"
  read -r -a a <<<"${WERR[$1,A]:-0 0}"
  if (( b[0] + b[1] + a[0] + a[1] == 0 )); then echo 0; return; fi
  echo "ERRORS: B ${b[0]} non-2xx/3xx + ${b[1]} socket, A ${a[0]} + ${a[1]}"
}

# --- header ---

HEADER=(
  "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  "machine:  $NCPU CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  "flotilla: $BIN (built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    [[ -n $(git -C "$ROOT" status --porcelain -- src 2>/dev/null) ]] && echo ' + uncommitted changes in src/'))"
  "backend:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, return 200 \"hello\\n\" on $INSTANCES ports; /64k: a 65536-byte file (sendfile), 127.0.0.1"
  "A:        flotilla up, workers: 1, one route (path_prefix /) to one instance; B: the same with one change per row"
  "load:     wrk -t1 -c$CONNS (workers_2: -c$CONNS_W2) -d${DURATION}s, warm-up ${WARMUP}s each, rounds: $ROUNDS (A B A B ...); wrk, backend and gateway share the $NCPU CPUs"
  "before:   machine ${OTHERS}% busy with other work (100 = one CPU), load average $(cut -d' ' -f1-3 /proc/loadavg)"
)
echo "== flotilla gateway: what each feature costs (B = A + one change)"
printf '%s\n' "${HEADER[@]}"
(( OTHERS < 10 )) || echo "WARNING:  other processes are using the CPUs; every number will be lower and noisier"
echo "rows:     ${SELECTED[*]}"
echo

# --- the runs ---

start_backend
B_LB_WANT=round_robin start_gateway A A 1 1 0
check_answer A / 6
check_answer A /64k 65536
declare -A LABELS
i=0
for ROW in "${SELECTED[@]}"; do
  i=$(( i + 1 ))
  row_setup "$ROW"
  echo "-- $i/${#SELECTED[@]} $ROW: $LABEL"
  B_LB_WANT=$B_LB start_gateway B "B-$ROW" "$B_WORKERS" "$B_INSTANCES" 1
  check_answer B "$B_PATH" "$B_BYTES"
  run_wrk "$ROW" A "$ROW_CONNS" "$WARMUP" / "" "${WRK_BOTH[@]}"
  run_wrk "$ROW" B "$ROW_CONNS" "$WARMUP" "$B_PATH" "" "${WRK_BOTH[@]}" "${WRK_B[@]}"
  for r in $(seq "$ROUNDS"); do
    run_wrk "$ROW" A "$ROW_CONNS" "$DURATION" / "A,$r" "${WRK_BOTH[@]}"
    run_wrk "$ROW" B "$ROW_CONNS" "$DURATION" "$B_PATH" "B,$r" "${WRK_BOTH[@]}" "${WRK_B[@]}"
  done
  if (( B_INSTANCES > 1 )); then
    read -r _ _ used fewest most <<<"$(gateway_view B)"
    echo "    B's $B_INSTANCES instances: $used served requests (the fewest $fewest, the most $most, over the warm-up and the rounds)"
  fi
  stop_instance B
  LABELS[$ROW]=$LABEL
done
stop_instance A
echo

# --- the table ---

OTHER_CPU=$(for k in "${!RES[@]}"; do echo "${RES[$k]}" | field 7; done | median)
STEAL_MED=$(for k in "${!RES[@]}"; do echo "${RES[$k]}" | field 8; done | median)
STEAL_MAX=$(for k in "${!RES[@]}"; do echo "${RES[$k]}" | field 8; done | sort -g | tail -1)
OTHER_NOTE=$(awk -v o="$OTHER_CPU" -v d="$DURATION" -v s="$STEAL_MED" -v x="$STEAL_MAX" 'BEGIN {
  printf "other processes used %.0f%% of a CPU during the median measured run (%.2f CPU s of %d s)%s; ", o / d * 100, o, d,
    (o / d > 0.1) ? ": the machine was not idle, the numbers are noisier than they would be" : ""
  printf "the hypervisor took %.0f%% of a CPU from this VM in the median run (steal, %s CPU s; the most in one run: %s)", s / d * 100, s, x }')

TXT=("$(printf '%-20s %9s %9s %9s %11s %11s %11s  %s' row "A req/s" "B req/s" "req/s B/A" "A us/req" "B us/req" "CPU/req B/A" errors)")
MD=("| configuration B | row | req/s A | req/s B | req/s B/A | gateway CPU µs per request A | B | CPU per request B/A | errors |"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for ROW in "${SELECTED[@]}"; do
  read -r ar br rr au bu ur <<<"$(row_result "$ROW")"
  err=$(errors_text "$ROW")
  TXT+=("$(printf '%-20s %9.0f %9.0f %9.2f %11.2f %11.2f %11.2f  %s' "$ROW" "$ar" "$br" "$rr" "$au" "$bu" "$ur" "$err")")
  MD+=("| ${LABELS[$ROW]} | \`$ROW\` | $(printf '%.0f' "$ar") | $(printf '%.0f' "$br") | $(printf '%.2f' "$rr") | $(printf '%.2f' "$au") | $(printf '%.2f' "$bu") | $(printf '%.2f' "$ur") | $err |")
done
if (( ROUNDS == 1 )); then ROUNDS_NOTE="1 round"; else ROUNDS_NOTE="medians of $ROUNDS rounds; B/A: the median of the ratios within each round"; fi
echo "gateway CPU per request (us/req) = utime+stime of the flotilla up process over the run / requests; $ROUNDS_NOTE"
printf '%s\n' "${TXT[@]}"
echo "$OTHER_NOTE"
{
  echo "# What the gateway's features cost"
  echo
  echo '```'
  printf '%s\n' "${HEADER[@]}"
  echo '```'
  echo
  echo "Generated by \`bash bench/gateway/features.sh\`. Each row: \`flotilla up\` with one change (B) against the"
  echo "one-route baseline (A), interleaved; $ROUNDS_NOTE. Gateway CPU per request: utime + stime of"
  echo "the \`flotilla up\` process (its registry agent included) over the run, divided by the requests."
  echo "Errors: non-2xx/3xx answers and socket errors wrk counted, warm-ups included."
  echo
  printf '%s\n' "${MD[@]}"
  echo
  echo "Machine during the runs: $OTHER_NOTE."
} >"$RESULTS"
echo "markdown written to $RESULTS"

if (( ERRORS )); then echo "SOME RUNS HAD WRONG ANSWERS OR SOCKET ERRORS (see the errors column)"; exit 1; fi
exit 0

# shellcheck shell=bash
# Helpers shared by bench/gateway/run.sh and bench/gateway/features.sh; sourced, never run.
#
# The script that sources this runs under `set -euo pipefail` and sets, before it calls these:
#   PY (python3), NGINX (the nginx binary), TICKS (getconf CLK_TCK), NCPU (nproc),
#   PROXY_FDS and NGINX_CONNS (worker_rlimit_nofile and worker_connections of nginx_common).
# make_work NAME creates WORK and installs the trap that, on exit, Ctrl-C or failure, stops every
# process in PID (each by its PID, never by name) and removes WORK (kept with BENCH_KEEP=1).
# PID[NAME] and PORT[NAME] hold each instance the script started; CHILD the load generator running.

die() { echo "bench: $*" >&2; exit 2; }

# Anything else using the CPUs skews every number: measure it for a second before starting.
# "total idle+iowait steal" ticks of the whole machine. Steal is time the hypervisor gave this VM's
# vCPUs to someone else while they had work: on a shared host it is the largest source of noise.
machine() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6, $9 }' /proc/stat; }
stolen() { awk -v a="$1" -v b="$2" -v t="$TICKS" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.2f", (y[3] - x[3]) / t }'; }
busy() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); dt = y[1] - x[1]; v = 0
  if (dt > 0) v = (dt - (y[2] - x[2])) / dt * 100 * '"$NCPU"'; printf "%.0f", v }'; }

declare -A PID PORT  # per running instance (backend, nginx, haproxy, flotilla)
CHILD=                # the wrk or idle client running now
cleanup() {
  local rc=$? name
  if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  for name in "${!PID[@]}"; do stop_instance "$name"; done
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    echo "bench: configs, logs and raw wrk output kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
make_work() {  # make_work NAME: WORK = a new temp dir $TMPDIR/NAME.XXXXXX, and the cleanup trap
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  chmod 755 "$WORK"   # nginx workers run as an unprivileged user when started by root
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The processes of an instance: the PID we started and, for nginx, its workers (its children).
tree() {  # tree PID
  local p=$1
  echo "$p"
  cat /proc/"$p"/task/*/children 2>/dev/null | tr ' ' '\n' | sed '/^$/d' || true
}
cpu_ticks() {  # cpu_ticks PID: utime+stime of the process tree (all threads)
  local t=0 p v
  for p in $(tree "$1"); do
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || v=0
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}
rss_kib() {  # rss_kib PID: VmRSS of the process tree
  local t=0 p v
  for p in $(tree "$1"); do
    v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || v=0
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}

stop_instance() {  # stop_instance NAME: SIGTERM the PID we started (and, if need be, its workers)
  local name=$1 pid=${PID[$1]:-} kids
  [[ -n $pid ]] || return 0
  unset "PID[$name]"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kids=$(tree "$pid" | tail -n +2)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "bench: $name ($pid) did not stop on SIGTERM within 5 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for p in $kids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true; done
  return 0
}

log_tail() {  # log_tail FILE
  [[ -s $1 ]] && { echo "bench: $1 ends with:" >&2; tail -n 15 "$1" | sed 's/^/  /' >&2; }
  return 0
}

wait_ready() {  # wait_ready NAME LOG: until GET / through it answers 200 (10 s at most)
  local name=$1 log=$2 url=http://127.0.0.1:${PORT[$1]}/ code
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null) || true
    [[ $code == 200 ]] && return 0
    kill -0 "${PID[$name]}" 2>/dev/null || { log_tail "$log"; die "$name exited at start-up"; }
    sleep 0.1
  done
  log_tail "$log"
  die "$name does not answer 200 on $url (last status: ${code:-none})"
}

nginx_common() {  # nginx_common NAME WORKERS: the top of an nginx config of our own
  local dir=$WORK/$1
  mkdir -p "$dir"
  chmod 755 "$dir"
  cat <<EOF
worker_processes $2;
worker_rlimit_nofile $PROXY_FDS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $NGINX_CONNS; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
EOF
}

start_nginx() {  # start_nginx NAME CONF
  local dir=$WORK/$1
  "$NGINX" -p "$dir" -e "$dir/error.log" -c "$2" -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
  PID[$1]=$!
  wait_ready "$1" "$dir/error.log"
}

# --- wrk ---

# CPU time of the processes this shell waited for (wrk, through timeout).
cpu_children() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat"; }

# Runs a bounded load generator in the background and waits for it, so that Ctrl-C (which bash
# only acts on between commands) interrupts the wait at once; cleanup then stops it by PID.
run_child() {  # run_child OUTFILE SECONDS COMMAND...; sets CHILD_RC
  local out=$1 limit=$2
  shift 2
  timeout --kill-after=5 "$limit" "$@" >"$out" 2>&1 &
  CHILD=$!
  CHILD_RC=0
  wait "$CHILD" || CHILD_RC=$?
  CHILD=
}

# wrk's output -> "req/s requests p50_ms p99_ms errors" (errors: non-2xx/3xx + socket errors).
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v + 0 }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    / requests in / { n = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END { printf "%.0f %d %.3f %.3f %d\n", rps, n, p50, p99, err }' "$1"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

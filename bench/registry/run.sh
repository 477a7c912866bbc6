#!/usr/bin/env bash
# Registry benchmark (`make bench`): starts its own agent on a free loopback port with a fresh data
# dir, measures KV reads/s, durable KV writes/s and service registrations/s (wrk, 64 connections)
# and the fan-out of one change to 1,000 of 11,000 blocking queries (bench_watch_fanout), prints a
# table against the targets and stops everything it started. See docs/benchmarks.md ("Registry").
#
# Every load is bounded: wrk runs for BENCH_DURATION with a per-thread request cap, the fan-out tool
# has its own deadlines, and each is wrapped in `timeout`. Ctrl-C stops the load and the agent. Exit status: 0 when every row passes,
# 1 when a target is missed or an answer was wrong, 2 when the benchmark could not run.
#
# Knobs (environment): BENCH_DURATION (5s), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_WATCH_SERVICES (10000), BENCH_HOT_WATCHERS (1000), BENCH_KEEP=1 keeps the data dir and logs,
# FLOTILLA_BUILD_DIR (build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${FLOTILLA_BUILD_DIR:-$ROOT/build}
BIN=$BUILD/flotilla
TOOL=$BUILD/bench_watch_fanout
LUA=$ROOT/bench/registry/load.lua
DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
SERVICES=${BENCH_WATCH_SERVICES:-10000}
HOT=${BENCH_HOT_WATCHERS:-1000}
PY=/usr/bin/python3

die() {
  echo "bench: $*" >&2
  if [[ -n ${DATA:-} && -s $DATA/agent.log ]]; then
    echo "bench: the agent's log ends with:" >&2
    tail -n 15 "$DATA/agent.log" | sed 's/^/  /' >&2
  fi
  exit 2
}

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v curl >/dev/null || die "curl is not installed"
[[ -x $PY ]] || die "$PY is missing"
[[ -x $BIN ]] || die "$BIN is missing: build the agent first (make build)"
# Build only our own tool: someone else may be building the rest of the tree.
if [[ -f $BUILD/build.ninja ]]; then
  ninja -C "$BUILD" bench_watch_fanout >/dev/null || die "building bench_watch_fanout failed"
fi
[[ -x $TOOL ]] || die "$TOOL is missing (is add_subdirectory(bench) in CMakeLists.txt and the build configured?)"

# Anything else using the CPUs skews every number: measure it for a second before starting.
s0=$(awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat)
sleep 1
OTHERS=$(awk -v a="$s0" '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; split(a, x, " "); dt = t - x[1]; v = 0
  if (dt > 0) v = (dt - ($5 + $6 - x[2])) / dt * 100; printf "%.0f", v }' /proc/stat)

DATA=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-bench.XXXXXX")
AGENT_PID=
CHILD=  # the load generator running now (wrk or bench_watch_fanout, under timeout)
cleanup() {
  local rc=$?
  if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$AGENT_PID" 2>/dev/null; then
      echo "bench: agent $AGENT_PID did not stop on SIGTERM within 5 s; killing it" >&2
      kill -KILL "$AGENT_PID" 2>/dev/null || true
    fi
    wait "$AGENT_PID" 2>/dev/null || true
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    echo "bench: data dir and logs kept in $DATA"
  else
    rm -rf "$DATA"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# A free loopback port (the agent would take port 0 too, but then we would have to parse its log).
PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT

"$BIN" agent --api "127.0.0.1:$PORT" --data-dir "$DATA/agent" --node bench >"$DATA/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do
  curl -sf "$URL/v1/status/leader" >/dev/null 2>&1 && break
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$DATA/agent.log" >&2; die "the agent exited at start-up"; }
  sleep 0.1
done
curl -sf "$URL/v1/status/leader" >/dev/null || { cat "$DATA/agent.log" >&2; die "the agent does not answer on $URL"; }

# --- helpers ---

result() { sed -n "s/^RESULT $2=//p" "$1" | tail -n 1; }  # result FILE NAME
metric() { curl -sf "$URL/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'; }
# CPU seconds of the agent: all threads, and its main (API/control) thread alone.
cpu_total() { awk '{ printf "%d", $14 + $15 }' "/proc/$AGENT_PID/stat"; }
cpu_main() { awk '{ printf "%d", $14 + $15 }' "/proc/$AGENT_PID/task/$AGENT_PID/stat"; }
TICKS=$(getconf CLK_TCK)
pct() { awk -v a="$1" -v b="$2" -v s="$3" -v t="$TICKS" 'BEGIN { printf "%.0f", (b - a) / t / s * 100 }'; }
secs() { awk -v d="${1%s}" 'BEGIN { print d + 0 }'; }
# The whole machine: "total idle" jiffies; busy% between two samples (of all CPUs together).
machine() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
busy() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); dt = y[1] - x[1]; v = 0
  if (dt > 0) v = (dt - (y[2] - x[2])) / dt * 100; printf "%.0f", v }'; }

# CPU time of the processes this shell waited for (wrk, through timeout).
cpu_children() { awk '{ printf "%d", $16 + $17 }' "/proc/$$/stat"; }
NCPU=$(nproc)

declare -A CPU
run_wrk() {  # run_wrk MODE CAP
  local mode=$1 cap=$2 out=$DATA/wrk-$1.txt t0 m0 s0 c0 d agent api load machine_pct others
  t0=$(cpu_total); m0=$(cpu_main); s0=$(machine); c0=$(cpu_children)
  run_child "$out" $(( $(secs "$DURATION") + 60 )) \
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 5s -s "$LUA" "$URL" -- "$mode" "$cap"
  (( CHILD_RC == 0 )) || { cat "$out" >&2; die "wrk ($mode) failed (exit $CHILD_RC)"; }
  kill -0 "$AGENT_PID" 2>/dev/null || die "the agent died during the $mode load "
  d=$(secs "$DURATION")
  agent=$(pct "$t0" "$(cpu_total)" "$d"); api=$(pct "$m0" "$(cpu_main)" "$d"); load=$(pct "$c0" "$(cpu_children)" "$d")
  machine_pct=$(busy "$s0" "$(machine)")
  # Whatever else ran on the machine meanwhile (other builds, tests): it skews the numbers.
  others=$(( machine_pct * NCPU - agent - load )); (( others > 0 )) || others=0
  CPU[$mode]="$agent / $api / $load / $others"
  grep -vE '^RESULT ' "$out" | sed 's/^/    /'
}

echo "== flotilla registry benchmark"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:  $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r)"
echo "agent:    $BIN (built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
  [[ -n $(git -C "$ROOT" status --porcelain -- src 2>/dev/null) ]] && echo ' + uncommitted changes in src/'))"
echo "store:    $DATA/agent ($(df -T "$DATA" | awk 'NR == 2 { print $2 " on " $1 }')), pid $AGENT_PID, $URL"
# Durable writes cost one fdatasync per group commit: show what the disk under the data dir charges.
FSYNC=$($PY - "$DATA/fsync-probe" <<'PYEOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
block, t = b"\0" * 4096, []
for i in range(64):  # allocate first: SQLite's WAL is rewritten in place, not grown
    os.pwrite(fd, block, i * 4096)
os.fsync(fd)
for i in range(200):
    start = time.perf_counter()
    os.pwrite(fd, block, (i % 64) * 4096)
    os.fdatasync(fd)
    t.append((time.perf_counter() - start) * 1000)
os.close(fd)
os.unlink(sys.argv[1])
t.sort()
print(f"4 KiB overwrite + fdatasync: p50 {t[len(t) // 2]:.2f} ms, p99 {t[int(len(t) * 0.99) - 1]:.2f} ms")
PYEOF
)
echo "disk:     $FSYNC"
echo "load:     wrk -t$THREADS -c$CONNS -d$DURATION; fan-out: $SERVICES + $HOT blocking queries"
echo "before:   machine ${OTHERS}% busy with other work, load average $(cut -d' ' -f1-3 /proc/loadavg)"
(( OTHERS < 10 )) || echo "WARNING:  other processes are using the CPUs; expect lower numbers than on an idle machine"
echo

answer=$(curl -sf -X PUT --data-binary 'bench value' "$URL/v1/kv/bench/key") || die "cannot create bench/key"
[[ $answer == true ]] || die "PUT bench/key answered \"$answer\""

echo "-- 1/4 KV reads: GET /v1/kv/bench/key"
run_wrk read 2000000
echo "-- 2/4 KV writes: PUT /v1/kv/bench/w/<random> (durable, each answer 200 \"true\")"
tx0=$(metric flotilla_store_transactions_total); bc0=$(metric flotilla_store_commit_batch_size_count)
cs0=$(metric flotilla_store_commit_seconds_sum)
run_wrk write 500000
tx1=$(metric flotilla_store_transactions_total); bc1=$(metric flotilla_store_commit_batch_size_count)
cs1=$(metric flotilla_store_commit_seconds_sum)
GROUP=$(awk -v t="$((tx1 - tx0))" -v c="$((bc1 - bc0))" -v s0="$cs0" -v s1="$cs1" \
  'BEGIN { if (c > 0) printf "%d group commits, %.1f transactions each, %.2f ms per commit", c, t / c, (s1 - s0) / c * 1000 }')
echo "    store: $GROUP"

echo "-- 3/4 watch fan-out: $SERVICES + $HOT blocking GET /v1/health/service/..., then one change to 'hot'"
FAN=$DATA/fanout.txt
run_child "$FAN" 300 "$TOOL" --port "$PORT" --agent-pid "$AGENT_PID" --services "$SERVICES" --hot "$HOT"
grep -vE '^RESULT ' "$FAN" | sed 's/^/    /'
[[ -n $(result "$FAN" fanout_exact) ]] || echo "bench: the fan-out tool failed (exit $CHILD_RC)" >&2
kill -0 "$AGENT_PID" 2>/dev/null || die "the agent died during the fan-out "
sleep 1  # the agent closes 11,000 connections
echo "    agent after the watchers left: $(metric flotilla_api_connections) connections, $(metric flotilla_blocking_queries_waiting) waiting, VmRSS $(awk '/^VmRSS/ { print $2 " " $3 }' "/proc/$AGENT_PID/status")"

echo "-- 4/4 registrations: PUT /v1/agent/service/register, distinct IDs"
run_wrk register 500000
errors=$(grep -ciE '\b(error|warn)' "$DATA/agent.log" || true)
[[ $errors == 0 ]] || { echo "    agent log: $errors warning/error lines, first ones:"; grep -iE '\b(error|warn)' "$DATA/agent.log" | head -n 5 | sed 's/^/      /'; }

# --- the table ---

FAILED=0
ROWS=()
row() {  # row METRIC VALUE TARGET VERDICT
  ROWS+=("$(printf '%-46s %16s %14s  %s' "$1" "$2" "$3" "$4")")
  [[ $4 != FAIL ]] || FAILED=1
}
verdict() {  # verdict VALUE OP LIMIT  (numeric compare; empty value fails)
  [[ -n $1 ]] || { echo FAIL; return; }
  awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= l : v < l; print ok ? "PASS" : "FAIL" }'
}
wrk_rows() {  # wrk_rows MODE LABEL TARGET
  local f=$DATA/wrk-$1.txt
  local good wrong sock
  good=$(result "$f" good_rps)
  wrong=$(( $(result "$f" non200) + $(result "$f" bad_body) ))
  sock=$(result "$f" socket_errors)
  local v
  v=$(verdict "$good" ">=" "$3")
  [[ $wrong == 0 && $sock == 0 ]] || v=FAIL
  row "$2" "$good" ">= $3" "$v"
  row "  wrong answers / socket errors" "$wrong / $sock" "0 / 0" "$([[ $wrong == 0 && $sock == 0 ]] && echo PASS || echo FAIL)"
  row "  latency p50 / p99 (ms)" "$(awk -v a="$(result "$f" lat_p50_us)" -v b="$(result "$f" lat_p99_us)" \
    'BEGIN { printf "%.2f / %.2f", a / 1000, b / 1000 }')" "" "info"
  row "  CPU %: agent / its API thread / wrk / other" "${CPU[$1]}" "" "info"
}

wrk_rows read "KV reads/s ($CONNS conns)" 20000
wrk_rows write "KV writes/s, durable, 200 \"true\" ($CONNS conns)" 5000
wrk_rows register "registrations/s, durable ($CONNS conns)" 5000

p99_ack=$(result "$FAN" fanout_p99_ms); p99_send=$(result "$FAN" fanout_send_p99_ms)
row "fan-out p99 from write ack (ms)" "${p99_ack:-n/a}" "< 100" "$(verdict "$p99_ack" "<" 100)"
row "fan-out p99 from write sent (ms)" "${p99_send:-n/a}" "< 100" "$(verdict "$p99_send" "<" 100)"
row "  p50 / max from ack (ms)" "$(result "$FAN" fanout_p50_ms) / $(result "$FAN" fanout_max_ms)" "" "info"
row "  p50 / max from sent (ms)" "$(result "$FAN" fanout_send_p50_ms) / $(result "$FAN" fanout_send_max_ms)" "" "info"
row "  write ack after (ms)" "$(result "$FAN" fanout_ack_ms)" "" "info"
hot_n=$(result "$FAN" fanout_hot_ok); others=$(result "$FAN" fanout_others_answered)
row "fan-out answers: hot ok / others in 2 s" "${hot_n:-?} / ${others:-?}" "$HOT / 0" \
  "$([[ $(result "$FAN" fanout_exact) == 1 ]] && echo PASS || echo FAIL)"
row "blocking queries parked (agent gauge)" "$(result "$FAN" fanout_parked)" "$((SERVICES + HOT))" \
  "$([[ $(result "$FAN" fanout_parked) == $((SERVICES + HOT)) ]] && echo PASS || echo FAIL)"
row "  agent: results recomputed / queries woken" "$(result "$FAN" fanout_recomputed) / $(result "$FAN" fanout_woken)" "1 / $HOT" "info"
if [[ -n $(result "$FAN" node_change_max_ms) ]]; then
  row "node-wide change: first / last answer (ms)" \
    "$(result "$FAN" node_change_first_ms) / $(result "$FAN" node_change_max_ms)" "" "info"
  row "  watchers answered / write ack after (ms)" \
    "$(result "$FAN" node_change_answers) / $(result "$FAN" node_change_ack_ms)" "$SERVICES / -" "info"
fi
bpq=$(result "$FAN" bytes_per_waiting_query)
row "agent memory per waiting query (bytes)" "${bpq:-n/a}" "" "info"
row "  agent VmRSS before / parked (MiB)" "$(awk -v a="$(result "$FAN" rss_before_kib)" -v b="$(result "$FAN" rss_parked_kib)" \
  'BEGIN { printf "%.1f / %.1f", a / 1024, b / 1024 }')" "" "info"
row "  registrations/s while preparing (tool)" "$(result "$FAN" fanout_register_per_s)" "" "info"

echo
printf '%-46s %16s %14s  %s\n' "metric" "value" "target" "result"
printf '%s\n' "$(printf '%.0s-' $(seq 86))"
printf '%s\n' "${ROWS[@]}"
echo
if [[ $FAILED == 0 ]]; then echo "all targets met"; else echo "SOME TARGETS MISSED (see FAIL rows)"; fi
exit $FAILED

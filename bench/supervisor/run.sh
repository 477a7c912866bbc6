#!/usr/bin/env bash
# Supervisor benchmark (`make bench-supervisor`): the numbers issue 4 asks for, for docs/benchmarks.md.
#
#   (a) `flotilla up -d` -> every service healthy, 5 services x 2 instances of the C++ test service
#       with an a -> b -> c depends_on chain (service_healthy): median of ROUNDS, with the default
#       health check and with an HTTP one every 200 ms
#   (b) an instance's death (SIGKILL) -> the last request the gateway routed to it, under load with
#       retries off (the gateway's access log): median of KILLS kills (target < 50 ms)
#   (c) failed requests during DEPLOYS rolling deploys of 4 instances under load (target 0)
#   (d) seconds from a load step to the added instances serving (autoscale 1 -> 4; target < 5 s)
# The work is in bench/supervisor/bench.py (it reuses the end-to-end tests' App and load
# generator). Prints a table and writes it as markdown to RESULTS (bench/supervisor/results-latest.md).
#
# Every load is bounded (time and count) and paced (LOAD_RATE req/s from 6 keep-alive Python
# clients: a 2-core machine stays usable); everything listens on 127.0.0.1 on free ports, in a temp
# dir; everything started is stopped by PID (`flotilla down`, then the agent's pid, then any process
# carrying the run's FLOTILLA_APP). The whole run is capped at TIMEOUT seconds (default 600).
#
# Knobs (environment): ROUNDS (3), KILLS (5), DEPLOYS (3), LOAD_RATE (500), TIMEOUT (600),
# RESULTS, BENCH_KEEP=1 (keep the temp dir), FLOTILLA_BUILD_DIR (build).
#
# Exit status: 0 when it ran and no request failed during the rolling deploys, 1 when a target
# check failed, 2 when the benchmark could not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${FLOTILLA_BUILD_DIR:-$ROOT/build}
PY=/usr/bin/python3
TIMEOUT=${TIMEOUT:-600}

die() { echo "bench-supervisor: $*" >&2; exit 2; }

[[ -x $PY ]] || die "$PY is missing"
[[ -x $BUILD/flotilla ]] || die "$BUILD/flotilla is missing (make build)"
[[ -x $BUILD/tests/test_service ]] || die "$BUILD/tests/test_service is missing (make build)"
$PY -c 'import pytest' 2>/dev/null || die "python3-pytest is missing (make deps)"

export FLOTILLA_BIN=$BUILD/flotilla
export FLOTILLA_TEST_SERVICE=$BUILD/tests/test_service
# timeout sends SIGTERM to bench.py only; its `finally` blocks stop what it started.
exec timeout --kill-after=30 "$TIMEOUT" "$PY" "$ROOT/bench/supervisor/bench.py"

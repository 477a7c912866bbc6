#!/usr/bin/env bash
# The main job: `flotilla up` on examples/gateway (the agent and the gateway in one process), two
# instances of a small Python service registered with health checks, and what to try. Stops (and
# cleans up, by PID) on Ctrl-C. The supervisor will start the instances itself in a later version.
set -euo pipefail
cd "$(dirname "$0")/.."
API=127.0.0.1:7700
GW=127.0.0.1:8080
for port in 7700 8080 9101 9102; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is in use (another demo or agent running?); stop it first" >&2
    exit 1
  fi
done
mkdir -p .flotilla/demo
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
trap 'exit 0' INT TERM
./build/flotilla up -f examples/gateway/flotilla.yaml &
PIDS+=($!)
/usr/bin/python3 examples/gateway/hello.py 9101 hello-1 & PIDS+=($!)
/usr/bin/python3 examples/gateway/hello.py 9102 hello-2 & PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://$API/v1/status/leader" >/dev/null && break; sleep 0.1; done
for i in 1 2; do
  curl -sf -X PUT "http://$API/v1/agent/service/register" -d '{
    "Name": "hello", "ID": "hello-'"$i"'", "Address": "127.0.0.1", "Port": 910'"$i"',
    "Check": {"HTTP": "http://127.0.0.1:910'"$i"'/healthz", "Interval": "1s", "Timeout": "500ms"}}' >/dev/null
done
for _ in $(seq 100); do curl -sf "http://$GW/" >/dev/null && break; sleep 0.1; done

cat <<MSG

flotilla is running: agent API http://$API, gateway http://$GW (examples/gateway/flotilla.yaml).
Two instances of "hello" (Python, ports 9101 and 9102) are registered with HTTP health checks. Try:
  for i in 1 2 3 4; do curl -s http://$GW/api/hello/x; done   # both instances answer (round robin)
  curl -s http://$GW/nowhere                     # 404 from the gateway, with a JSON body
  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code} ' http://$GW/limited; done; echo   # 429s
  curl -s http://$API/v1/flotilla/gateway        # endpoints, live counts, ejections
  curl -s -X PUT http://$API/v1/agent/service/maintenance/hello-1?enable=true   # out of rotation…
  curl -s http://$GW/api/hello/x                 # …only hello-2 answers now
  ./build/flotilla services
  curl -s http://$API/metrics | grep flotilla_gateway_requests_total
  tail -f .flotilla/demo/access.log              # one JSON line per request
Press Ctrl-C to stop.
MSG
wait "${PIDS[0]}"

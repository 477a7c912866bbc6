#!/usr/bin/env bash
# The main job: `flotilla up` on examples/hello — the agent, the gateway and two services in two
# languages (web in Python calls quotes in Node.js through QUOTES_URL), two instances each — then
# what to try. Ctrl-C stops everything gracefully (instances drained, then stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
API=127.0.0.1:7700
GW=127.0.0.1:8080
FILE=examples/hello/flotilla.yaml
for port in 7700 8080; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is in use (another demo or agent running? 'flotilla down -f $FILE' stops a demo)" >&2
    exit 1
  fi
done
./build/flotilla up -f "$FILE" &
AGENT=$!
stop() { kill -TERM "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; }
trap stop EXIT
trap 'exit 0' INT TERM
ready() {
  local status
  status=$(curl -sf "http://$API/v1/flotilla/status") || return 1  # the API is not up yet
  printf '%s' "$status" | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["Services"]
sys.exit(0 if s and all(x["Ready"] >= x["Desired"] for x in s) else 1)'
}
for _ in $(seq 300); do ready && break; kill -0 "$AGENT" 2>/dev/null || exit 1; sleep 0.1; done
curl -s "http://$GW/"

cat <<MSG

flotilla is running examples/hello: agent API http://$API, gateway http://$GW.
"web" (Python, 2 instances) calls "quotes" (Node.js, 2 instances) through \$QUOTES_URL. Try, in another shell:
  curl -s http://$GW/                                  # web answers with a quote from quotes
  curl -s http://$GW/quotes/random                     # quotes directly, through the gateway
  ./build/flotilla status                              # versions, ready/desired, req/s, p95
  ./build/flotilla ps                                  # instances: pid, port, health, CPU, memory
  ./build/flotilla logs -f web                         # both web instances, merged (Ctrl-C ends)
  ./build/flotilla scale quotes=3
  ./build/flotilla deploy web --set environment.GREETING=Bonjour --wait   # rolling, zero failed requests
  ./build/flotilla deploy web --set environment.GREETING=Hola --canary 20 # 20 % of traffic to one new instance
  ./build/flotilla promote web                         # …or: ./build/flotilla rollback web
  kill -9 \$(./build/flotilla ps quotes --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Pid"])')
  ./build/flotilla events                              # crashed, restarted in 100 ms, healthy again
  curl -s http://$API/metrics | grep flotilla_gateway_requests_total
Press Ctrl-C to stop (or run ./build/flotilla down).
MSG
wait "$AGENT"

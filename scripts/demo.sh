#!/usr/bin/env bash
# The main job, for now: run the agent with a few things registered so there is something to see.
# Stops (and cleans up) on Ctrl-C. The example application comes with the supervisor.
set -euo pipefail
cd "$(dirname "$0")/.."
API=${FLOTILLA_API:-127.0.0.1:7700}
DATA=${FLOTILLA_DEMO_DIR:-.flotilla/demo}
mkdir -p "$DATA"
./build/flotilla agent --api "$API" --data-dir "$DATA" &
AGENT=$!
stop() { kill "$AGENT" 2>/dev/null; wait "$AGENT" 2>/dev/null; }
trap stop EXIT
trap 'exit 0' INT TERM
for _ in $(seq 50); do curl -sf "http://$API/v1/status/leader" >/dev/null && break; sleep 0.1; done

curl -sf -X PUT "http://$API/v1/agent/service/register" -d '{
  "Name": "agent-api", "ID": "agent-api-1", "Port": '"${API##*:}"', "Address": "127.0.0.1",
  "Check": {"HTTP": "http://'"$API"'/v1/status/leader", "Interval": "2s", "Timeout": "1s"}}' >/dev/null
curl -sf -X PUT "http://$API/v1/kv/demo/greeting" -d 'hello from flotilla' >/dev/null
INDEX=$(curl -sf -D - -o /dev/null "http://$API/v1/kv/demo/greeting" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-consul-index" {print $2}')

cat <<MSG

flotilla agent is running on http://$API (data in $DATA). Try:
  ./build/flotilla services --api $API
  ./build/flotilla kv get demo/greeting --api $API
  curl -s 'http://$API/v1/health/service/agent-api?passing'
  curl -s 'http://$API/v1/kv/demo/greeting?index=$INDEX&wait=30s'   # blocks until the key changes…
  ./build/flotilla kv put demo/greeting changed --api $API        # …from another terminal
  curl -s http://$API/metrics
Press Ctrl-C to stop.
MSG
wait $AGENT

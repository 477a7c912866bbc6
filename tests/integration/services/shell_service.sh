#!/bin/sh
# A small service for flotilla's end-to-end tests, in POSIX shell: socat accepts on
# 127.0.0.1:$PORT and runs this script with --handle for each connection (one request per
# connection, answered with Connection: close). The contract it shares with py_service.py and
# test_service.cpp:
#   GET /healthz   200 "ok"; 500 while $UNHEALTHY_FOR_MS has not elapsed since start, or while the
#                  file named by $HEALTH_FILE exists;
#   GET /          200 {"instance": $FLOTILLA_INSTANCE, "service": $FLOTILLA_SERVICE,
#                  "version": $VERSION, "pid": N}; the same with 500 when FAIL=1;
#   GET /env       the whole environment as a JSON object;
#   GET /slow?ms=N sleeps N ms, then answers like /;
#   CRASH_AFTER_MS=N    exits with code 3 after N ms;
#   FORK_CHILDREN=1     starts a background `sleep 1000` child and a `setsid sleep 1000` daemon at
#                       start and prints "children PID1 PID2";
#   prints "listening on $PORT" on stdout and "started" on stderr; SIGTERM: exits at once (socat
#   is exec'd, so the signal reaches it).

now_ms() {
  ns=$(date +%s%N)
  echo $((ns / 1000000))
}

# 1500 -> 1.500 (for sleep)
ms_to_s() {
  printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

json_escape() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

respond() {  # respond STATUS CONTENT_TYPE BODY
  case $1 in
    200) reason="OK" ;;
    404) reason="Not Found" ;;
    500) reason="Internal Server Error" ;;
    *) reason="Unknown" ;;
  esac
  printf 'HTTP/1.1 %s %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$1" "$reason" "$2" "${#3}" "$3"
}

identity() {
  printf '{"instance": "%s", "service": "%s", "version": "%s", "pid": %s}' \
    "$(json_escape "${FLOTILLA_INSTANCE:-}")" "$(json_escape "${FLOTILLA_SERVICE:-}")" \
    "$(json_escape "${VERSION:-}")" "${SERVICE_PID:-0}"
}

identity_answer() {
  if [ "${FAIL:-}" = 1 ]; then
    respond 500 application/json "$(identity)"
  else
    respond 200 application/json "$(identity)"
  fi
}

healthy() {
  if [ -n "${UNHEALTHY_FOR_MS:-}" ] && [ "$(($(now_ms) - START_MS))" -lt "$UNHEALTHY_FOR_MS" ]; then
    return 1
  fi
  if [ -n "${HEALTH_FILE:-}" ] && [ -e "$HEALTH_FILE" ]; then
    return 1
  fi
  return 0
}

environment_json() {
  awk 'BEGIN {
    out = "{"; sep = ""
    for (k in ENVIRON) {
      v = ENVIRON[k]
      gsub(/\\/, "\\\\", v); gsub(/"/, "\\\"", v); gsub(/\n/, "\\n", v); gsub(/\r/, "\\r", v); gsub(/\t/, "\\t", v)
      out = out sep "\"" k "\": \"" v "\""; sep = ", "
    }
    printf "%s}", out
  }'
}

handle() {
  cr=$(printf '\r')
  IFS= read -r line || exit 0
  line=${line%"$cr"}
  # Headers: read up to the empty line (the body, if any, is not read: Connection: close).
  while IFS= read -r header; do
    header=${header%"$cr"}
    [ -z "$header" ] && break
  done
  set -- $line
  target=${2:-/}
  path=${target%%\?*}
  query=""
  case $target in *\?*) query=${target#*\?} ;; esac
  case $path in
    /healthz)
      if healthy; then respond 200 text/plain ok; else respond 500 text/plain unhealthy; fi ;;
    /)
      identity_answer ;;
    /env)
      respond 200 application/json "$(environment_json)" ;;
    /slow)
      ms=""
      case "&$query" in *"&ms="*) ms=${query#*ms=}; ms=${ms%%&*} ;; esac
      case $ms in ''|*[!0-9]*) ;; *) sleep "$(ms_to_s "$ms")" ;; esac
      identity_answer ;;
    *)
      respond 404 application/json "{\"error\": \"not found\", \"path\": \"$(json_escape "$path")\"}" ;;
  esac
  exit 0
}

if [ "${1:-}" = "--handle" ]; then
  handle
fi

: "${PORT:?shell_service.sh needs PORT}"
START_MS=$(now_ms)
SERVICE_PID=$$
export START_MS SERVICE_PID

if [ "${FORK_CHILDREN:-}" = 1 ]; then
  sleep 1000 </dev/null &
  child=$!
  setsid sleep 1000 </dev/null &
  daemon=$!
  echo "children $child $daemon"
fi

echo "listening on $PORT"
echo "started" >&2

LISTEN="TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,backlog=128"
if [ -n "${CRASH_AFTER_MS:-}" ] && [ "$CRASH_AFTER_MS" -gt 0 ]; then
  # Not exec'd: this shell exits with code 3 after CRASH_AFTER_MS (SIGTERM still ends it at once).
  socat "$LISTEN" EXEC:"$0 --handle" &
  socat_pid=$!
  trap 'kill "$socat_pid" 2>/dev/null; exit 143' TERM
  sleep "$(ms_to_s "$CRASH_AFTER_MS")" &
  wait $!
  kill "$socat_pid" 2>/dev/null
  exit 3
fi
exec socat "$LISTEN" EXEC:"$0 --handle"

#!/usr/bin/env bash
# Installs every Debian package flotilla needs to build, test, benchmark and run its demo.
# Idempotent and quiet when everything is present. Runs apt-get as root or through sudo.
set -euo pipefail

PACKAGES=(
  # build
  cmake ninja-build ccache g++ pkg-config
  # libraries
  libboost1.74-dev libssl-dev libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libcli11-dev libsqlite3-dev libxxhash-dev
  # tests
  googletest libgtest-dev libgmock-dev python3 python3-pytest python3-requests python3-consul
  prometheus
  # fuzzing (clang's libFuzzer runtime)
  clang libclang-rt-14-dev
  # benchmarks (bench/gateway/run.sh compares the gateway with nginx and HAProxy as proxies)
  libbenchmark-dev wrk nginx haproxy
  # the demo's services (examples/hello: Python and Node.js); the shell test service serves with socat
  nodejs socat
  # misc tools used by tests and scripts
  curl procps iproute2
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "scripts/deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  $SUDO apt-get update -qq >/dev/null
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# nginx, haproxy and prometheus are used as programs (the benchmark and the tests start their own
# with their own config on free loopback ports), never as system services: if a postinst started
# one (where no policy-rc.d forbids it), stop it so that it holds no port (80, 9090, ...).
# Only the daemons of packages installed just now, by the PID in their pid file, and only when that
# PID really is that program.
stop_daemon() {  # stop_daemon PACKAGE PIDFILE PROGRAM
  local pkg=$1 pidfile=$2 prog=$3 pid
  [[ " ${missing[*]} " == *" $pkg "* ]] || return 0
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now "$pkg" >/dev/null 2>&1 || true
  fi
  [[ -r $pidfile ]] || return 0
  pid=$(head -n 1 "$pidfile" | tr -dc 0-9)
  [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$prog"* ]] || return 0
  echo "scripts/deps.sh: stopping the $pkg service that its installation started (pid $pid)" >&2
  $SUDO kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
stop_daemon nginx /run/nginx.pid nginx
stop_daemon haproxy /run/haproxy.pid haproxy
stop_daemon prometheus /run/prometheus/prometheus.pid prometheus

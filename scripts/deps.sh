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
  # fuzzing (clang's libFuzzer runtime)
  clang libclang-rt-14-dev
  # benchmarks
  libbenchmark-dev wrk
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

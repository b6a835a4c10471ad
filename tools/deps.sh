#!/usr/bin/env bash
# Makes sure the build dependencies are present on a Debian/Ubuntu machine.
# As root it installs what is missing with apt-get; otherwise it prints the
# exact command to run and fails.
set -euo pipefail

packages=(cmake make gcc g++ pkg-config libcjson-dev libzstd-dev libpcre2-dev libmicrohttpd-dev
          libdnnl-dev libopenmpi-dev openmpi-bin curl)
[ "${MXL_WITH_CLANG:-0}" = 1 ] && packages+=(clang libclang-rt-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  echo "mxlora: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "mxlora: missing packages: ${missing[*]}" >&2
  echo "run:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

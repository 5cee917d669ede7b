#!/usr/bin/env bash
# Installs the build dependencies from Debian's packages (skips apt when they are all present).
set -euo pipefail
# clang and libclang-rt-14-dev (libFuzzer): the fuzz harnesses, scripts/fuzz.sh
pkgs=(cmake gcc make libcjson-dev libzstd-dev libarchive-dev libcunit1-dev clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

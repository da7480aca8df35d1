#!/usr/bin/env bash
# Installs the Debian packages qat builds and tests with, when missing.
# As root it runs apt-get itself; otherwise it prints the exact line to run.
set -eu
pkgs="build-essential cmake pkg-config libopenblas-dev libcjson-dev libcyaml-dev check libsubunit-dev libsentencepiece-dev python3 python3-numpy"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
line="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && $line -qq >/dev/null
else
  echo "deps: missing packages; run as root:" >&2
  echo "  sudo apt-get update && sudo $line" >&2
  exit 1
fi

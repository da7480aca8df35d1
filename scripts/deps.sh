#!/usr/bin/env bash
# Installs what qat builds and tests with, when missing: Debian packages (as root it runs
# apt-get itself; otherwise it prints the exact line to run), then the Python modules the test
# references use (numpy, sentencepiece, tokenizers, gguf) from PyPI.
# `deps.sh fuzz` also installs clang and its libFuzzer / sanitizer runtime (tests/fuzz).
set -eu
pkgs="build-essential cmake pkg-config libopenblas-dev libcjson-dev libcyaml-dev check libsubunit-dev libsentencepiece-dev libpcre2-dev libutf8proc-dev libopenmpi-dev openmpi-bin python3 python3-pip"
fuzz=0
if [ "${1:-}" = fuzz ]; then
  fuzz=1
  pkgs="$pkgs clang"
fi
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# python3/pip may come from elsewhere (pyenv): only require the Debian ones when absent
command -v python3 >/dev/null && missing=$(echo "$missing" | sed 's/ python3-pip//; s/ python3\b//')
if [ -n "${missing// /}" ]; then
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
fi
# libFuzzer ships in libclang-rt-N-dev, N the installed clang's major version (14 on Debian 12)
if [ $fuzz = 1 ] && ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
  >/dev/null 2>&1; then
  rt="libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
  if [ "$(id -u)" = 0 ]; then
    echo "deps: installing $rt"
    apt-get install -y --no-install-recommends -qq "$rt" >/dev/null
  else
    echo "deps: missing libFuzzer; run as root: sudo apt-get install -y $rt" >&2
    exit 1
  fi
fi
pymissing=""
for m in numpy sentencepiece tokenizers gguf; do python3 -c "import $m" 2>/dev/null || pymissing="$pymissing $m"; done
if [ -n "$pymissing" ]; then
  echo "deps: pip install$pymissing"
  python3 -m pip install --quiet $pymissing ||
    python3 -m pip install --quiet --break-system-packages $pymissing ||
    echo "deps: could not pip install$pymissing (tests that need them will fail)" >&2
fi
exit 0

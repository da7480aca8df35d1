#!/usr/bin/env bash
# llama.cpp as the peer that loads qat's GGUF exports (issue 11: "SmolLM2 quantized at symmetric
# W4 g32 and exported to GGUF runs in llama.cpp: llama-perplexity of the Q4_0 export is within 1%
# of llama-perplexity of the same weights exported as F32"). Not a CI test (it needs the peer
# build outside the repository and a few minutes of CPU):
#   1. llama-perplexity built in the peer build of benchmarks/peer_llamacpp.sh (run its `build`
#      stage first; this adds the llama-perplexity target);
#   2. SmolLM2-135M-Instruct converted from its GGUF (qat convert --from gguf), RTN-quantized at
#      SPEC (default rtn:4g32:sym) two ways: `qat quantize` (the fake-quant folder, F32 weights on
#      the grid) exported as an F32 GGUF, and `qat export --quant SPEC` straight to Q4_0 / Q4_1 /
#      Q8_0; the fp model exported as F32 too, for reference;
#   3. llama-perplexity of the three on the same text, windows and threads; the quantized
#      export's relative difference to the F32 export of the same weights, and whether it is
#      within 1%.
# Usage: benchmarks/peer_llamacpp_gguf_ppl.sh [SPEC]
# Env:   QAT_PEERS (default /work/peers), QAT_BUILD (qat's build folder, default build),
#        SMOL_GGUF (default $QAT_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf), TEXT (default
#        ../shared/assets/text/wikitext2_test.raw), CTX (512), CHUNKS (10), THREADS (2),
#        OUT (work folder, default a temporary one, removed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SPEC=${1:-rtn:4g32:sym}
PEERS=${QAT_PEERS:-/work/peers}
BUILD=$PEERS/llama.cpp-build
QAT=${QAT_BUILD:-$repo/build}/qat
SMOL_GGUF=${SMOL_GGUF:-${QAT_CACHE:-$HOME/.cache/qat}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
TEXT=${TEXT:-$repo/../shared/assets/text/wikitext2_test.raw}
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-10}
THREADS=${THREADS:-2}

[ -d "$BUILD" ] || { echo "no peer build at $BUILD: run benchmarks/peer_llamacpp.sh build" >&2; exit 2; }
[ -x "$QAT" ] || { echo "no qat at $QAT (QAT_BUILD)" >&2; exit 2; }
[ -f "$SMOL_GGUF" ] || { echo "no $SMOL_GGUF: run scripts/fetch_smollm2.sh" >&2; exit 2; }
[ -x "$BUILD/bin/llama-perplexity" ] || cmake --build "$BUILD" -j2 --target llama-perplexity >/dev/null
export LD_LIBRARY_PATH=$BUILD/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

if [ -n "${OUT:-}" ]; then W=$OUT; mkdir -p "$W"; else W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; fi
"$QAT" convert --from gguf "$SMOL_GGUF" --out "$W/fp" > /dev/null 2>&1
q=${SPEC#rtn:}
bits=${q%%g*}; rest=${q#*g}; group=${rest%%:*}; sym=""
case "$SPEC" in *:sym*) sym=--sym ;; esac
"$QAT" quantize --model "$W/fp" --bits "$bits" --group "$group" $sym --out "$W/fq" > /dev/null 2>&1
"$QAT" export --format gguf --model "$W/fp" --out "$W/fp_f32.gguf" > /dev/null
"$QAT" export --format gguf --model "$W/fq" --out "$W/fq_f32.gguf" > /dev/null
"$QAT" export --format gguf --model "$W/fp" --quant "$SPEC" --out "$W/q.gguf" | tail -1

ppl() {
  "$BUILD/bin/llama-perplexity" -m "$1" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'
}
echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p') threads $THREADS ctx $CTX chunks $CHUNKS load $(cut -d' ' -f1-3 /proc/loadavg)"
fp=$(ppl "$W/fp_f32.gguf"); fq=$(ppl "$W/fq_f32.gguf"); qq=$(ppl "$W/q.gguf")
python3 - "$SPEC" "$fp" "$fq" "$qq" "$(stat -c %s "$W/fq_f32.gguf")" "$(stat -c %s "$W/q.gguf")" <<'PY'
import sys
spec, fp, fq, q, bf, bq = sys.argv[1], *map(float, sys.argv[2:])
rel = q / fq - 1
print(f"llama-perplexity: fp F32 {fp:.4f}; {spec} as F32 {fq:.4f} ({bf / 1e6:.0f} MB); "
      f"{spec} exported {q:.4f} ({bq / 1e6:.0f} MB): {100 * rel:+.3f}% vs the same weights in F32 "
      f"({'within' if abs(rel) <= 0.01 else 'NOT within'} 1%)")
PY

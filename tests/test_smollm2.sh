#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end (the real-model track), skipped when the GGUF is absent
# ($QAT_SMOLLM2_GGUF, else ${QAT_CACHE:-~/.cache/qat}/smollm2/; scripts/fetch_smollm2.sh):
# - qat tokenize --docs none --lf of WikiText-2 test gives exactly the `tokenizers` library's ids
#   on the converted folder's tokenizer.json (CRLF -> LF, one stream, no BOS: add_bos_token false);
# - qat eval of the converted model on the first 2048-token window equals the independent float64
#   numpy forward (tests/ref/llama_ref.py) within 1e-4 relative in perplexity;
# - greedy generation through the KV cache equals the no-cache path (also fake-quant W4 g128).
set -euo pipefail
QAT=${QAT_BIN:-build/qat}
# a 135M-parameter forward under ASan at -O0 takes many minutes: the sanitizer pass covers these
# code paths on stories260K
[ "${QAT_SANITIZED:-0}" = 1 ] && { echo "skipped: sanitizer build (the optimized pass runs it)"; exit 77; }
name=SmolLM2-135M-Instruct.Q4_1.gguf
G=${QAT_SMOLLM2_GGUF:-${QAT_CACHE:-$HOME/.cache/qat}/smollm2/$name}
[ -f "$G" ] || { echo "skipped: $G not found (scripts/fetch_smollm2.sh fetches it; or set QAT_SMOLLM2_GGUF)"; exit 77; }
A=${QAT_ASSETS:-../shared/assets}
[ -f "$A/text/wikitext2_test.raw" ] || { echo "skipped: no assets at $A"; exit 77; }
python3 -c 'import numpy, tokenizers' 2>/dev/null ||
  { echo "skipped: python3 with numpy and tokenizers not found"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$QAT" convert --from gguf "$G" --out "$T/m" > /dev/null
"$QAT" tokenize --tokenizer "$T/m" --in "$A/text/wikitext2_test.raw" --docs none --lf \
  --out "$T/wt2.npy" > /dev/null
python3 tests/ref/gguf_ref.py tokenize "$T/m" "$A/text/wikitext2_test.raw" "$T/wt2_ref.npy" \
  --wikitext > /dev/null
python3 - "$T/wt2.npy" "$T/wt2_ref.npy" <<'PY'
import sys
import numpy as np
a, b = (np.load(p).astype(np.int64) for p in sys.argv[1:3])
if a.shape != b.shape or (a != b).any():
    i = int(np.argmax(a[:min(len(a), len(b))] != b[:min(len(a), len(b))]))
    raise SystemExit(f"WikiText-2 ids differ from tokenizers: {len(a)} vs {len(b)} tokens, first at {i}")
print(f"WikiText-2 test: {len(a)} ids identical to the tokenizers library (no BOS)")
PY

"$QAT" eval --model "$T/m" --data "$T/wt2.npy" --seq-len 2048 --max-windows 1 --device cpu \
  --json > "$T/qat.json" 2> /dev/null
python3 tests/ref/llama_ref.py --model "$T/m" --data "$T/wt2.npy" --seq-len 2048 \
  --max-windows 1 > "$T/ref.json"
python3 - "$T/qat.json" "$T/ref.json" <<'PY'
import json, sys
q, r = (json.load(open(p)) for p in sys.argv[1:3])
rel = abs(q["ppl"] - r["ppl"]) / r["ppl"]
print(f"window 1 of 2048: qat ppl {q['ppl']:.6f}, numpy float64 reference {r['ppl']:.6f} (rel {rel:.2e})")
assert q["tokens"] == r["tokens"] == 2047, (q, r)
assert rel < 1e-4, "perplexity differs from the reference by more than 1e-4 relative"
PY

for quant in "" "--quant rtn:4g128"; do
  # shellcheck disable=SC2086
  "$QAT" generate --model "$T/m" --prompt "The capital of France is" --steps 24 --temperature 0 \
    --device cpu $quant > "$T/kv.txt" 2> "$T/kv.err" || { cat "$T/kv.err"; fail "generate"; }
  # shellcheck disable=SC2086
  "$QAT" generate --model "$T/m" --prompt "The capital of France is" --steps 24 --temperature 0 \
    --device cpu --no-cache $quant > "$T/nc.txt" 2> /dev/null || fail "generate --no-cache"
  cmp -s "$T/kv.txt" "$T/nc.txt" ||
    { echo "cache:"; cat "$T/kv.txt"; echo "no cache:"; cat "$T/nc.txt"; fail "KV-cache greedy output differs ($quant)"; }
  echo "greedy ${quant:-fp}: $(head -c 120 "$T/kv.txt" | tr '\n' ' ') [cache = no-cache]"
done
echo "smollm2: all checks passed"

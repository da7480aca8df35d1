#!/usr/bin/env bash
# The real GGUF file: SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1 Linears, Q8_0 embeddings, tied head,
# 9 / 3 heads, byte-level BPE with pre-tokenizer "smollm"). qat convert --from gguf must equal
# the independent reference tests/ref/gguf_ref.py tensor for tensor (byte-identical F32 data,
# same names, dtypes and shapes), with equal config.json, tokenizer.json and
# tokenizer_config.json; qat tokenize on the converted folder must give the `tokenizers`
# library's ids (gguf_ref.py tokenize) on WikiText-2 and TinyStories text.
# The file: $QAT_SMOLLM2_GGUF, else ${QAT_CACHE:-~/.cache/qat}/smollm2/ (scripts/fetch_smollm2.sh
# puts it there); skipped with a message when absent. $QAT_SMOLLM2_REF may name a folder that
# gguf_ref.py convert already wrote from the same file (saves ~30 s).
set -euo pipefail
QAT=${QAT_BIN:-build/qat}
name=SmolLM2-135M-Instruct.Q4_1.gguf
G=${QAT_SMOLLM2_GGUF:-${QAT_CACHE:-$HOME/.cache/qat}/smollm2/$name}
[ -f "$G" ] || { echo "skipped: $G not found (scripts/fetch_smollm2.sh fetches it; or set QAT_SMOLLM2_GGUF)"; exit 77; }
python3 -c 'import gguf, numpy, tokenizers' 2>/dev/null ||
  { echo "skipped: python3 with gguf, numpy and tokenizers not found"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

start=$(date +%s.%N)
"$QAT" convert --from gguf "$G" --out "$T/qat" 2>"$T/err" || { cat "$T/err"; fail "convert"; }
secs=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
REFDIR=${QAT_SMOLLM2_REF:-}
if [ -z "$REFDIR" ]; then
  REFDIR=$T/ref
  python3 tests/ref/gguf_ref.py convert "$G" "$REFDIR" >/dev/null
fi

python3 - "$T/qat" "$REFDIR" <<'PY'
import json, mmap, os, struct, sys
a, b = sys.argv[1], sys.argv[2]
for n in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    x = json.load(open(os.path.join(a, n), encoding="utf-8"))
    y = json.load(open(os.path.join(b, n), encoding="utf-8"))
    if x != y:
        raise SystemExit(f"{n} differs: {[k for k in x if x.get(k) != y.get(k)][:5]}")
def st(d):
    f = open(os.path.join(d, "model.safetensors"), "rb")
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (n,) = struct.unpack("<Q", m[:8])
    h = json.loads(m[8:8 + n])
    h.pop("__metadata__", None)
    return m, 8 + n, h
ma, ba, ha = st(a)
mb, bb, hb = st(b)
if set(ha) != set(hb):
    raise SystemExit(f"tensor names differ: {sorted(set(ha) ^ set(hb))[:5]}")
for k in ha:
    ea, eb = ha[k], hb[k]
    if (ea["dtype"], ea["shape"]) != (eb["dtype"], eb["shape"]):
        raise SystemExit(f"{k}: {ea['dtype']} {ea['shape']} != {eb['dtype']} {eb['shape']}")
    (a0, a1), (b0, b1) = ea["data_offsets"], eb["data_offsets"]
    if ma[ba + a0:ba + a1] != mb[bb + b0:bb + b1]:
        raise SystemExit(f"{k}: data differs from the reference")
c = json.load(open(os.path.join(a, "config.json")))
assert c["tie_word_embeddings"] and c["num_key_value_heads"] == 3 and c["num_hidden_layers"] == 30, c
print(f"smollm2: {len(ha)} tensors byte-identical to gguf_ref.py's; config and tokenizer JSON equal")
PY

# tokenizer: qat's ids vs the tokenizers library's on the converted folder
A=${QAT_ASSETS:-../shared/assets}
for f in text/wikitext2_test.raw text/tinystories_val.txt; do
  [ -f "$A/$f" ] || { echo "note: $A/$f absent, tokenizer check skipped"; continue; }
  head -c 400000 "$A/$f" >"$T/text"
  python3 tests/ref/gguf_ref.py tokenize "$T/qat" "$T/text" "$T/ref.npy" >/dev/null
  if ! "$QAT" tokenize --tokenizer "$T/qat" --in "$T/text" --out "$T/qat.npy" --docs none 2>"$T/err"; then
    grep -q pre_tokenizer "$T/err" && { echo "note: qat refuses the smollm pre-tokenizer: $(cat "$T/err")"; continue; }
    cat "$T/err"
    fail "qat tokenize $f"
  fi
  python3 -c "
import numpy as np, sys
a, b = np.load('$T/qat.npy'), np.load('$T/ref.npy')
if a.tolist() != b.tolist():
    i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    sys.exit(f'$f: {len(a)} qat ids vs {len(b)} tokenizers ids, first difference at {i}')
print(f'$f: {len(a)} ids equal the tokenizers library')"
done
echo "ok: SmolLM2 GGUF converted in $secs s, equal to the reference"

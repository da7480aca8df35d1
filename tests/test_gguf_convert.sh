#!/usr/bin/env bash
# qat convert --from gguf and qat inspect FILE.gguf against llama.cpp's own Python package:
# tiny random models written by tests/ref/gguf_make.py (gguf.GGUFWriter; 4 query / 2 KV heads, so
# q and k are un-permuted with different head counts; tensors in 13 block types) are converted by
# qat and by the independent reference tests/ref/gguf_ref.py, and must agree exactly:
# - config.json, tokenizer.json and tokenizer_config.json equal as parsed JSON, every tensor
#   bit for bit, for llama (untied, smollm pre-tokenizer), llama (tied, llama-bpe, rope_freqs),
#   qwen2 (q/k/v biases, no permutation, qwen2 pre-tokenizer) and mistral (tied, default);
# - --dtype bf16: every tensor is the reference's float32 rounded to nearest even;
# - --shard-mb 1: shards + model.safetensors.index.json holding the same tensors, evaluating to
#   the same perplexity;
# - rope_freqs.weight: qat's rope_scaling through Hugging Face's llama3 formula (written out
#   here) reproduces the tensor, and the weight itself is not written;
# - model llama (SentencePiece): tokenizer.model parses into the same ModelProto as one built
#   with sentencepiece's own sentencepiece_model_pb2, and qat tokenize gives the ids
#   sentencepiece gives (BOS + pieces, byte fallback on CJK);
# - every converted folder loads: qat eval runs on it, and its NLL equals the float64 reference
#   forward (tests/ref/llama_ref.py) on the GGUF's own q/k rows with llama.cpp's interleaved
#   RoPE: the un-permutation checked by its meaning, not only by its formula;
# - malformed files (bad magic, versions 1 and 4, truncated header / metadata / tensor infos /
#   data, forged counts, unknown value / element / tensor types, n_dims 5, dims overflowing,
#   misaligned and out-of-file offsets, duplicate keys and tensor names, general.alignment 48 or
#   of type u64, a bool of 2) and refused valid ones
#   (big-endian, architecture falcon, pre-tokenizer deepseek-llm, an IQ4_NL tensor, a split
#   file, key_length 32 with a rotary dimension of 64): exit 1, one line that names the file
#   and the field, no output folder and no temporary left behind.
set -euo pipefail
QAT=${QAT_BIN:-build/qat}
python3 -c 'import gguf, numpy, tokenizers, sentencepiece' 2>/dev/null ||
  { echo "skipped: python3 with gguf, numpy, tokenizers and sentencepiece not found"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
MAKE="python3 tests/ref/gguf_make.py"
REF="python3 tests/ref/gguf_ref.py"

cat > "$T/cmp.py" <<'PY'
"""cmp.py QAT_DIR REF_DIR [--bf16] [--skip KEY]: JSON files equal, tensors bit-exact."""
import json, os, sys
import numpy as np
sys.path.insert(0, "tests/ref")
import st_np
a, b = sys.argv[1], sys.argv[2]
bf16 = "--bf16" in sys.argv
skip = sys.argv[sys.argv.index("--skip") + 1] if "--skip" in sys.argv else None
def js(d, n):
    p = os.path.join(d, n)
    return json.load(open(p, encoding="utf-8")) if os.path.exists(p) else None
for n in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    x, y = js(a, n), js(b, n)
    if n == "config.json":
        x.pop(skip, None)
        if bf16:
            assert x.pop("torch_dtype") == "bfloat16"
            y.pop("torch_dtype")
    if x != y:
        diff = [k for k in sorted(set(x or {}) | set(y or {})) if (x or {}).get(k) != (y or {}).get(k)]
        raise SystemExit(f"{a}/{n} differs from the reference at {diff[:5]}")
def read_all(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(idx):
        return st_np.read(os.path.join(d, "model.safetensors"))[::2]
    wm = json.load(open(idx))["weight_map"]
    t, dt = {}, {}
    for shard in sorted(set(wm.values())):
        x, _, y = st_np.read(os.path.join(d, shard))
        assert all(wm[k] == shard for k in x), f"{shard}: tensors not in its weight_map"
        t.update(x)
        dt.update(y)
    assert set(t) == set(wm), "weight_map lists tensors no shard holds"
    return t, dt
ta, da = read_all(a)
tb, db = read_all(b)
if set(ta) != set(tb):
    raise SystemExit(f"tensor names differ: {sorted(set(ta) ^ set(tb))[:5]}")
for k in ta:
    if ta[k].shape != tb[k].shape:
        raise SystemExit(f"{k}: shape {ta[k].shape} != {tb[k].shape}")
    want = tb[k].astype(np.float32)
    if bf16:
        assert da[k] == "BF16", (k, da[k])
        want = (st_np.bf16_bits(want).astype(np.uint32) << 16).view(np.float32)
    else:
        assert da[k] == "F32", (k, da[k])
    if not np.array_equal(ta[k].astype(np.float32).view(np.uint32), want.view(np.uint32)):
        n = int((ta[k].astype(np.float32).view(np.uint32) != want.view(np.uint32)).sum())
        raise SystemExit(f"{k}: {n} values differ from the reference")
print(f"{a}: {len(ta)} tensors and the JSON files equal the reference")
PY

# convert NAME [gguf_make model flags]: write, convert with qat and the reference, compare
convert() {
  local name=$1
  shift
  $MAKE model "$T/$name.gguf" "$@"
  "$QAT" convert --from gguf "$T/$name.gguf" --out "$T/$name.qat" 2>"$T/err" || { cat "$T/err"; fail "$name: convert"; }
  $REF convert "$T/$name.gguf" "$T/$name.ref" >/dev/null
}
convert llama --pre smollm --seed 1
python3 "$T/cmp.py" "$T/llama.qat" "$T/llama.ref"
grep -q '"tie_word_embeddings": false' "$T/llama.ref/config.json" || fail "llama: expected untied"
convert llama3 --pre llama-bpe --tied --rope-freqs --seed 2
python3 "$T/cmp.py" "$T/llama3.qat" "$T/llama3.ref" --skip rope_scaling
convert qwen --arch qwen2 --pre qwen2 --seed 3
python3 "$T/cmp.py" "$T/qwen.qat" "$T/qwen.ref"
convert mistral --arch mistral --pre default --tied --seed 4
python3 "$T/cmp.py" "$T/mistral.qat" "$T/mistral.ref"
"$QAT" convert --from gguf "$T/llama.gguf" --out "$T/llama.bf16" --dtype bf16 2>/dev/null
python3 "$T/cmp.py" "$T/llama.bf16" "$T/llama.ref" --bf16
# shards of at most 1 MiB: model-0000i-of-0000N + index, same tensors, same perplexity
"$QAT" convert --from gguf "$T/llama.gguf" --out "$T/llama.sh" --shard-mb 1 2>/dev/null
[ -f "$T/llama.sh/model.safetensors.index.json" ] && [ ! -f "$T/llama.sh/model.safetensors" ] &&
  [ "$(ls "$T/llama.sh" | grep -c '^model-0000[1-9]-of-0000[2-9].safetensors$')" -ge 4 ] ||
  fail "--shard-mb 1: expected 4 or more shards and an index: $(ls "$T/llama.sh")"
python3 "$T/cmp.py" "$T/llama.sh" "$T/llama.ref"

# rope_freqs.weight -> rope_scaling: Hugging Face's llama3 inv_freq divisors from qat's config
python3 - "$T/llama3.gguf" "$T/llama3.qat/config.json" <<'PY'
import json, math, sys
import numpy as np
import gguf
r = gguf.GGUFReader(sys.argv[1])
rf = next(t for t in r.tensors if t.name == "rope_freqs.weight").data.astype(np.float64)
c = json.load(open(sys.argv[2]))
rs = c["rope_scaling"]
assert rs["rope_type"] == "llama3", rs
f, lo, hi, orig = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], \
    rs["original_max_position_embeddings"]
D, base = c["head_dim"], c["rope_theta"]
inv = 1.0 / base ** (np.arange(0, D, 2) / D)
wl = 2 * math.pi / inv
smooth = (orig / wl - lo) / (hi - lo)
div = np.where(wl < orig / hi, 1.0, np.where(wl > orig / lo, f, 1 / ((1 - smooth) / f + smooth)))
err = np.max(np.abs(div - rf) / rf)
assert err < 1e-5, (err, rs)
assert (rf > 1).any() and (rf < f).any() and ((rf > 1) & (rf < f)).any(), "band not exercised"
print(f"rope_scaling {rs} reproduces rope_freqs.weight (max rel err {err:.1e})")
PY

# model llama: SentencePiece tokenizer.model vs sentencepiece_model_pb2, ids vs sentencepiece
$MAKE model "$T/spm.gguf" --tok llama --tied --seed 5
"$QAT" convert --from gguf "$T/spm.gguf" --out "$T/spm.qat" 2>/dev/null
$REF convert "$T/spm.gguf" "$T/spm.ref" >/dev/null
$MAKE spm "$T/spm.gguf" "$T/spm_ref.model"
printf 'Once upon a time there was a little girl named Lily. Zebra \xc3\xbc \xe4\xb8\x96\xe7\x95\x8c 123!\n  two  spaces' >"$T/spm.txt"
"$QAT" tokenize --tokenizer "$T/spm.qat" --in "$T/spm.txt" --out "$T/spm.npy" --docs none 2>/dev/null
python3 - "$T" <<'PY'
import json, os, sys
import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
T = sys.argv[1]
a, b = pb.ModelProto(), pb.ModelProto()
a.ParseFromString(open(f"{T}/spm.qat/tokenizer.model", "rb").read())
b.ParseFromString(open(f"{T}/spm_ref.model", "rb").read())
assert a == b, "tokenizer.model differs from the sentencepiece_model_pb2 reference"
sp = spm.SentencePieceProcessor(model_file=f"{T}/spm_ref.model")
text = open(f"{T}/spm.txt", encoding="utf-8").read()
want = [sp.bos_id()] + sp.encode(text)
got = np.load(f"{T}/spm.npy").tolist()
assert got == want, (got[:20], want[:20])
assert any(sp.id_to_piece(i).startswith("<0x") for i in want), "byte fallback not exercised"
tc = json.load(open(f"{T}/spm.qat/tokenizer_config.json"))
assert tc["add_bos_token"] is True and tc["bos_token"] == "<s>" and tc["eos_token"] == "</s>", tc
print(f"spm: tokenizer.model equals the pb2 reference; {len(got)} ids equal sentencepiece's")
PY
python3 - "$T" <<'PY'
import sys
sys.path.insert(0, "tests/ref")
import numpy as np, st_np
T = sys.argv[1]
a, _, _ = st_np.read(f"{T}/spm.qat/model.safetensors")
b, _, _ = st_np.read(f"{T}/spm.ref/model.safetensors")
assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
import json
assert json.load(open(f"{T}/spm.qat/config.json")) == json.load(open(f"{T}/spm.ref/config.json"))
PY

# every folder loads and evaluates
python3 -c "import numpy as np; np.save('$T/tok.npy', (np.arange(130) * 7 % 300).astype(np.uint16))"
for m in llama llama3 qwen mistral spm llama; do
  "$QAT" eval --model "$T/$m.qat" --data "$T/tok.npy" --seq-len 64 --device cpu --json >"$T/eval.json" 2>"$T/err" ||
    { cat "$T/err"; fail "$m: qat eval on the converted folder"; }
done
"$QAT" eval --model "$T/llama.sh" --data "$T/tok.npy" --seq-len 64 --device cpu --json >"$T/eval_sh.json" 2>/dev/null
cmp -s "$T/eval.json" "$T/eval_sh.json" || fail "sharded folder: eval $(cat "$T/eval_sh.json") != $(cat "$T/eval.json")"

# The un-permutation, checked by what it means rather than by its formula: the float64 numpy
# forward (tests/ref/llama_ref.py) run on the GGUF's own q/k rows with llama.cpp's interleaved-
# pair RoPE gives qat eval's NLL on
# the converted folder. (qwen2 is stored unpermuted and llama_ref.py has no q/k/v biases: its
# equality with gguf_ref.py above covers it.)
for m in llama mistral spm; do
  "$QAT" eval --model "$T/$m.qat" --data "$T/tok.npy" --seq-len 64 --device cpu --json >"$T/eval.json" 2>/dev/null
  python3 - "$T/$m.gguf" "$T/$m.qat" "$T/tok.npy" "$T/eval.json" <<'PY'
import json, sys
import numpy as np
sys.path.insert(0, "tests/ref")
import gguf, llama_ref
from gguf.quants import dequantize
g, d, tokp, evp = sys.argv[1:5]
m = llama_ref.load_hf(d)
r = gguf.GGUFReader(g)
arch = r.fields["general.architecture"].contents()
n = 0
for t in r.tensors:
    p = t.name.split(".")
    if len(p) == 4 and p[2] in ("attn_q", "attn_k") and p[3] == "weight":
        w = dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(list(t.shape))])
        m.layers[int(p[1])]["q" if p[2] == "attn_q" else "k"] = w.astype(np.float64)
        n += 1
assert n == 2 * len(m.layers)
m.interleaved = arch != "qwen2"
toks = np.load(tokp).astype(np.int64)
S, total, count = 64, 0.0, 0
for w in range(len(toks) // S):
    x = toks[w * S:(w + 1) * S]
    lg = llama_ref.forward(m, x)[:-1]
    mx = lg.max(axis=-1)
    lse = mx + np.log(np.exp(lg - mx[:, None]).sum(axis=-1))
    total += float(np.sum(lse - lg[np.arange(S - 1), x[1:]]))
    count += S - 1
ref = total / count
got = json.load(open(evp))["nll"]
assert np.isfinite(got) and abs(got - ref) <= 1e-5 * abs(ref), (arch, got, ref)
print(f"{d}: qat eval nll {got:.9f} = GGUF-layout reference ({'interleaved' if m.interleaved else 'rotate-half'} RoPE) {ref:.9f}")
PY
done

# inspect: metadata and tensors of a valid file
"$QAT" inspect "$T/llama.gguf" >"$T/insp" 2>&1 || fail "inspect"
grep -q 'llama.attention.head_count_kv *u32 *2' "$T/insp" || fail "inspect: metadata"
grep -q 'blk.0.attn_q.weight *Q4_K *\[256, 256\] *36864 bytes' "$T/insp" || fail "inspect: tensor line"
grep -q 'tokenizer.ggml.tokens *array *\[string x 340\]' "$T/insp" || fail "inspect: array"

# malformed and refused files
$MAKE bad "$T/bad"
n=0
for f in $(python3 -c "import json; print(' '.join(json.load(open('$T/bad/bad.json'))))"); do
  word=$(python3 -c "import json; print(json.load(open('$T/bad/bad.json'))['$f'])")
  rc=0
  "$QAT" convert --from gguf "$T/bad/$f" --out "$T/out_$f" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" = 1 ] || fail "$f: exit $rc (1 expected): $(cat "$T/err")"
  [ "$(wc -l <"$T/err")" = 1 ] || fail "$f: error is not one line: $(cat "$T/err")"
  grep -qF "$T/bad/$f" "$T/err" || fail "$f: error does not name the file: $(cat "$T/err")"
  grep -qF "$word" "$T/err" || fail "$f: error does not name \"$word\": $(cat "$T/err")"
  ls -d "$T"/out_"$f"* >/dev/null 2>&1 && fail "$f: an output folder or temporary was left"
  case $f in arch.gguf | pre.gguf | iq4.gguf | split.gguf | rotary.gguf) ;; # valid GGUF: inspect shows it
  *)
    rc=0
    "$QAT" inspect "$T/bad/$f" >"$T/out" 2>"$T/err" || rc=$?
    [ "$rc" = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && [ ! -s "$T/out" ] ||
      fail "$f: inspect exit $rc, $(wc -l <"$T/err") error lines, $(wc -c <"$T/out") bytes printed"
    ;;
  esac
  n=$((n + 1))
done
[ "$n" -ge 32 ] || fail "only $n malformed cases"
rc=0
"$QAT" convert --from gguf "$T/llama.gguf" --out "$T/x" --dtype f16 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--dtype f16: exit $rc (2 expected)"
echo "ok: 5 architectures / tokenizers equal to gguf_ref.py, bf16, rope_freqs, spm, $n malformed files"

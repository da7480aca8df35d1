#!/usr/bin/env bash
# qat export --format gguf on stories260K (skipped without the assets), checked with llama.cpp's
# own `gguf` package by tests/ref/gguf_export_check.py (metadata against config.json; every
# tensor through gguf.quants.dequantize, q / k rows un-permuted, against the fake-quant folder;
# the printed per-tensor "max weight change" equal to the measured one):
# - GPTQ folders (qat_quant.safetensors record, F32 scales): W4 sym -> Q4_0, W4 asym -> Q4_1
#   and W4 g64 -> Q4_1, within the reported F16 rounding of d / m;
# - the same folders moved onto the F16 scale grid (what quant.scale_dtype f16 would train):
#   W4 sym, W3 asym, W2 sym -> Q4_0 and W8 sym -> Q8_0 bit-exact, and `qat convert --from gguf`
#   of the export evaluates to the fake-quant folder's perplexity (to 1e-5 relative; W3 / W2 say
#   that Q4_0 is no size win); --gguf-dtype f16 floats;
# - a training run's checkpoint against its fakequant export; an fp folder with --quant against
#   qat quantize's fake-quant folder;
# - the tokenizer: tokenizer.bin -> GGUF "llama" -> tokenizer.model tokenizes TinyStories to the
#   same ids; gguf-package-made models of each tokenizer kind (llama-bpe, qwen2, smollm pre;
#   SentencePiece) and architecture (llama, qwen2, mistral, rope_freqs) survive GGUF -> qat
#   convert -> GGUF with every tensor and shared metadata key equal;
# - refusals (group 16, per-tensor, 8-bit asym, bad flags): one line, exit 1 (input) or 2
#   (usage), no file left behind;
# - SmolLM2-135M when its GGUF is cached (skipped otherwise): `qat convert --from gguf` then an
#   F32 export gives every tensor of the original Q4_1 file dequantized, bit for bit in llama.cpp's
#   layout, and every metadata key the two share equal (tokenizer included). (The quantized
#   paths are covered above; SmolLM2's Q4_0 export checks the same way but costs ~30 s more.)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
. "$(dirname "$0")/lib_stories260k.sh"
export PYTHONPATH="$PWD/tests/ref"
CHECK="python3 tests/ref/gguf_export_check.py"

# fake-quant folder $2 of $1 moved onto the F16 scale grid: s16 = f16(clamp(s)), codes as qat's
# fake-quant computes them, w = (code - z~) * s16 in float32 (qat's dq_forward).
f16_grid() {
  python3 - "$1" "$2" <<'PY'
import json, os, shutil, sys
import numpy as np
import st_np
src, dst = sys.argv[1:]
shutil.copytree(src, dst)
rec = json.load(open(os.path.join(src, "qat_quant.json")))
b, g, sym = rec["bits"], rec["group"], rec["sym"]
w, _, _ = st_np.read(os.path.join(src, "model.safetensors"))
q, _, _ = st_np.read(os.path.join(src, "qat_quant.safetensors"))
out_q = dict(q)
for base in sorted({k.rsplit(".", 1)[0] for k in q}):
    W = w[base + ".weight"].astype(np.float32)
    K = W.shape[1]
    s = np.clip(q[base + ".scales"].astype(np.float32), np.float32(1e-4), np.float32(1e4))
    rep = lambda a: np.repeat(a, g, axis=1)[:, :K].astype(np.float32)
    if sym:
        lo, hi, z = -(1 << (b - 1)), (1 << (b - 1)) - 1, np.zeros_like(s)
    else:
        lo, hi = 0, (1 << b) - 1
        z = np.clip(np.rint(q[base + ".zeros"].astype(np.float32)), 0, hi)
    code = np.clip(np.rint(W / rep(s)) + rep(z), lo, hi).astype(np.float32)
    s16 = s.astype(np.float16).astype(np.float32)
    w[base + ".weight"] = (code - rep(z)) * rep(s16)
    out_q[base + ".scales"] = s16
st_np.write(os.path.join(dst, "model.safetensors"), w, "F32")
st_np.write(os.path.join(dst, "qat_quant.safetensors"), out_q, "F32")
PY
}

ppl() { "$QAT" eval --model "$1" --data "$T/val.npy" --seq-len 128 --max-windows 40 --device cpu --json 2>/dev/null |
  python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["ppl"])'; }
same_ppl() { # dir-a dir-b tag
  local a b; a=$(ppl "$1"); b=$(ppl "$2")
  python3 -c "import sys; a, b = $a, $b; sys.exit(0 if abs(a - b) <= 1e-5 * a else 1)" ||
    { echo "FAIL: $3: ppl $a (fake-quant) vs $b (gguf)"; exit 1; }
  echo "ok: $3 ppl $a (fake-quant) = $b (gguf round trip)"
}

G=(--model "$T/m" --method gptq --calib "$T/train.npy" --samples 8 --seq-len 128 --device cpu)
for spec in "4 32 sym Q4_0" "4 32 asym Q4_1" "4 64 asym Q4_1" "3 32 asym Q4_0" "2 32 sym Q4_0" "8 32 sym Q8_0"; do
  set -- $spec
  tag="w$1g$2$3"; flag=""; [ "$3" = sym ] && flag="--sym"
  "$QAT" quantize "${G[@]}" --bits $1 --group $2 $flag --out "$T/$tag" > /dev/null 2>&1
  if [ "$1" = 4 ]; then # F32 scales: within the reported rounding
    "$QAT" export --format gguf --model "$T/$tag" --out "$T/$tag.gguf" > "$T/$tag.log"
    $CHECK "$T/$tag.gguf" "$T/$tag" "$T/$tag.log" --qtype $4 | sed "s/^/$tag /"
  fi
  [ "$2" = 32 ] && [ "$tag" != w4g32asym ] || continue
  f16_grid "$T/$tag" "$T/${tag}h"
  "$QAT" export --format gguf --model "$T/${tag}h" --out "$T/${tag}h.gguf" > "$T/${tag}h.log"
  $CHECK "$T/${tag}h.gguf" "$T/${tag}h" "$T/${tag}h.log" --qtype $4 --exact | sed "s/^/${tag}h /"
  if [ "$1" -lt 4 ]; then
    grep -q "no smaller than 4-bit" "$T/${tag}h.log" || { echo "FAIL: $tag: no size note"; exit 1; }
  fi
  "$QAT" convert --from gguf "$T/${tag}h.gguf" --out "$T/${tag}c" > /dev/null 2>&1
  same_ppl "$T/${tag}h" "$T/${tag}c" "${tag}h"
done

# F16 floats (embeddings and the down_proj fallback; norms stay F32)
"$QAT" export --format gguf --model "$T/w4g32symh" --gguf-dtype f16 --out "$T/f16.gguf" > "$T/f16.log"
$CHECK "$T/f16.gguf" "$T/w4g32symh" "$T/f16.log" --qtype Q4_0 --exact --f16-floats | sed "s/^/f16 /"

# the tokenizer through GGUF and back
"$QAT" tokenize --tokenizer "$T/m" --in "$A/text/tinystories_val.txt" --out "$T/ids_a.npy" >/dev/null 2>&1
"$QAT" tokenize --tokenizer "$T/w4g32symc" --in "$A/text/tinystories_val.txt" --out "$T/ids_b.npy" >/dev/null 2>&1
[ -f "$T/w4g32symc/tokenizer.model" ] && cmp -s "$T/ids_a.npy" "$T/ids_b.npy" ||
  { echo "FAIL: tokenizer.bin -> gguf -> tokenizer.model changes the ids"; exit 1; }
echo "ok: tokenizer round trip (TinyStories validation, identical ids)"

# a training run's checkpoint, against its fakequant export
cat > "$T/c.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 64}
method: qat
quant: {bits: 2, group: 32, sym: true}
train: {steps: 3, batch: 2, lr: 1e-3, lr_quant: 1e-3, warmup: 1, eval_windows: 1}
checkpoint: {dir: $T/run, every: 3, keep: 1}
YAML
"$QAT" train "$T/c.yaml" > /dev/null 2>&1
"$QAT" export --checkpoint "$T/run" --out "$T/run_fq" > /dev/null
"$QAT" export --format gguf --checkpoint "$T/run" --out "$T/run.gguf" > "$T/run.log"
$CHECK "$T/run.gguf" "$T/run_fq" "$T/run.log" --qtype Q4_0 | sed "s/^/checkpoint /"

# an fp folder quantized on the way, against qat quantize's RTN folder
"$QAT" quantize --model "$T/m" --bits 8 --group 32 --sym --out "$T/rtn8" > /dev/null 2>&1
"$QAT" export --format gguf --model "$T/m" --quant rtn:8g32:sym --out "$T/rtn8.gguf" > "$T/rtn8.log"
$CHECK "$T/rtn8.gguf" "$T/rtn8" "$T/rtn8.log" --qtype Q8_0 | sed "s/^/rtn8 /"

# packed folders (qat quantize --packed) of a small untied llama whose Linears all tile into
# groups (stories260K's down_proj does not): F32 scales against the fake-quant folder, F16 scales
# against the packed folder's own dequantization (tests/ref/packed_ref.py), exactly
python3 - "$T/m" "$T/syn" <<'PY'
import json, os, shutil, sys
import numpy as np
import st_np
src, d = sys.argv[1:]
os.makedirs(d)
C, F, L, H, KV, V = 64, 128, 2, 4, 2, 512
rng = np.random.default_rng(3)
t = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, C)), "model.norm.weight": rng.normal(1, 0.1, C),
     "lm_head.weight": rng.normal(0, 0.1, (V, C))}
for l in range(L):
    p = f"model.layers.{l}."
    t[p + "input_layernorm.weight"] = rng.normal(1, 0.1, C)
    t[p + "post_attention_layernorm.weight"] = rng.normal(1, 0.1, C)
    for n, sh in [("self_attn.q_proj", (C, C)), ("self_attn.k_proj", (KV * C // H, C)),
                  ("self_attn.v_proj", (KV * C // H, C)), ("self_attn.o_proj", (C, C)),
                  ("mlp.gate_proj", (F, C)), ("mlp.up_proj", (F, C)), ("mlp.down_proj", (C, F))]:
        t[p + n + ".weight"] = rng.normal(0, 0.1, sh)
st_np.write(os.path.join(d, "model.safetensors"), t, "F32")
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
       "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": H,
       "num_key_value_heads": KV, "vocab_size": V, "max_position_embeddings": 256,
       "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
       "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
shutil.copy(os.path.join(src, "tokenizer.bin"), d)
PY
"$QAT" quantize --model "$T/syn" --bits 4 --group 32 --out "$T/syn_fq" > /dev/null 2>&1
"$QAT" quantize --model "$T/syn" --bits 4 --group 32 --packed --scale-dtype f32 --out "$T/syn_p32" > /dev/null 2>&1
"$QAT" export --format gguf --model "$T/syn_p32" --out "$T/syn_p32.gguf" > "$T/syn_p32.log"
$CHECK "$T/syn_p32.gguf" "$T/syn_fq" "$T/syn_p32.log" --qtype Q4_1 | sed "s/^/packed-f32 /"
"$QAT" quantize --model "$T/syn" --bits 3 --group 64 --sym --packed --scale-dtype f16 --out "$T/syn_p16" > /dev/null 2>&1
python3 - "$T/syn_p16" "$T/syn_p16dq" <<'PY'
import os, shutil, sys
import st_np, packed_ref
src, d = sys.argv[1:]
shutil.copytree(src, d)
t, meta, _ = st_np.read(os.path.join(src, "model.safetensors"))
out = {k: v for k, v in t.items() if not k.endswith((".qcodes", ".qscales", ".qzeros"))}
for k in t:
    if k.endswith(".qcodes"):
        base = k[: -len(".qcodes")]
        out[base + ".weight"] = packed_ref.unpack(t, meta, base)[0]
st_np.write(os.path.join(d, "model.safetensors"), out, "F32")
PY
"$QAT" export --format gguf --model "$T/syn_p16" --out "$T/syn_p16.gguf" > "$T/syn_p16.log"
$CHECK "$T/syn_p16.gguf" "$T/syn_p16dq" "$T/syn_p16.log" --qtype Q4_0 --exact | sed "s/^/packed-f16 /"

# fp round trips through GGUF and `qat convert --from gguf`: the untied llama, a qwen2 variant
# (q/k/v biases, no row permutation) and a llama with Llama-3.1 rope_scaling (written as
# rope_freqs.weight, recovered by the importer): same tensors bit for bit, same rope_scaling
python3 - "$T/syn" "$T/synq" "$T/synr" <<'PY'
import json, os, shutil, sys
import numpy as np
import st_np
src, q, r = sys.argv[1:]
for d in (q, r):
    shutil.copytree(src, d)
t, _, _ = st_np.read(os.path.join(src, "model.safetensors"))
rng = np.random.default_rng(4)
for l in range(2):
    for n, rows in [("q", 64), ("k", 32), ("v", 32)]:
        t[f"model.layers.{l}.self_attn.{n}_proj.bias"] = rng.normal(0, 0.1, rows)
st_np.write(os.path.join(q, "model.safetensors"), t, "F32")
c = json.load(open(os.path.join(src, "config.json")))
json.dump(dict(c, model_type="qwen2", architectures=["Qwen2ForCausalLM"]), open(os.path.join(q, "config.json"), "w"))
json.dump(dict(c, rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0,
          "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
          open(os.path.join(r, "config.json"), "w"))
PY
for s in syn synq synr; do
  "$QAT" export --format gguf --model "$T/$s" --out "$T/$s.gguf" > /dev/null
  "$QAT" convert --from gguf "$T/$s.gguf" --out "$T/${s}_rt" > /dev/null 2>&1
  python3 - "$T/$s" "$T/${s}_rt" <<'PY'
import json, os, sys
import numpy as np
import st_np
a, b = sys.argv[1:]
x, _, _ = st_np.read(os.path.join(a, "model.safetensors"))
y, _, _ = st_np.read(os.path.join(b, "model.safetensors"))
assert set(x) == set(y), sorted(set(x) ^ set(y))
for k in x:
    assert np.array_equal(x[k], y[k]), k
ca, cb = (json.load(open(os.path.join(d, "config.json"))) for d in (a, b))
for k in ["model_type", "rope_scaling", "rope_theta", "tie_word_embeddings", "num_key_value_heads"]:
    assert ca.get(k) == cb.get(k), (k, ca.get(k), cb.get(k))
print(f"ok: {os.path.basename(a)} ({ca['model_type']}{', llama3 rope' if ca.get('rope_scaling') else ''}) "
      f"-> gguf -> qat convert: {len(x)} tensors bit-identical, config equal")
PY
done

# GGUF -> qat convert -> GGUF for tiny models written by llama.cpp's gguf package
# (tests/ref/gguf_make.py: many block types, each tokenizer kind): every tensor the original
# dequantized, every shared metadata key equal (tokenizer.ggml.* included; Mistral comes back as
# the llama architecture, as llama.cpp's converter writes it)
for v in "llama --tok gpt2 --pre llama-bpe" "qwen2 --tok gpt2 --pre qwen2" "llama --tok llama --tied" \
         "mistral --tok gpt2 --pre smollm --rope-freqs"; do
  n=$(echo "$v" | tr -d ' -')
  python3 tests/ref/gguf_make.py model "$T/$n.gguf" --arch $v > /dev/null
  "$QAT" convert --from gguf "$T/$n.gguf" --out "$T/$n" > /dev/null 2>&1
  "$QAT" export --format gguf --model "$T/$n" --out "$T/$n.x.gguf" > "$T/$n.log"
  $CHECK "$T/$n.x.gguf" "$T/$n" "$T/$n.log" --ref-gguf "$T/$n.gguf" | sed "s/^/$n /"
done

refuse() { # rc want-substring cmd...
  local rc=$1 want=$2; shift 2
  set +e; out=$("$@" 2>&1 >/dev/null); got=$?; set -e
  [ $got = "$rc" ] || { echo "FAIL: exit $got (want $rc) for $*: $out"; exit 1; }
  echo "$out" | grep -q "$want" || { echo "FAIL: message '$out' lacks '$want'"; exit 1; }
  [ "$(echo "$out" | wc -l)" = 1 ] || { echo "FAIL: not one line: $out"; exit 1; }
  [ ! -e "$T/bad.gguf" ] || { echo "FAIL: output left behind"; exit 1; }
  ls "$T" | grep -q "bad.gguf.tmp" && { echo "FAIL: temporary left behind"; exit 1; }
  return 0
}
E=("$QAT" export --format gguf --model "$T/m" --out "$T/bad.gguf")
refuse 1 "multiple of 32" "${E[@]}" --quant rtn:4g16:sym
refuse 1 "per-tensor" "${E[@]}" --quant rtn:4gt
refuse 1 "8-bit asymmetric" "${E[@]}" --quant rtn:8g32
refuse 2 "expected f32 or f16" "${E[@]}" --gguf-dtype bf16
refuse 2 "already quantized" "$QAT" export --format gguf --model "$T/w4g32sym" --quant rtn:4g32 --out "$T/bad.gguf"
refuse 2 "expected fakequant, gptq or gguf" "$QAT" export --format ggml --checkpoint "$T/run" --out "$T/bad.gguf"
refuse 2 "give --checkpoint RUN or --model DIR" "$QAT" export --format gguf --out "$T/bad.gguf"
echo "ok: refusals"

# SmolLM2-135M (its Q4_1 GGUF, cached by scripts/fetch_smollm2.sh)
S=${QAT_CACHE:-$HOME/.cache/qat}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$S" ] && [ "${QAT_SANITIZED:-0}" != 1 ]; then
  "$QAT" convert --from gguf "$S" --out "$T/smol" > /dev/null 2>&1
  "$QAT" export --format gguf --model "$T/smol" --out "$T/smol.gguf" > "$T/smol.log"
  $CHECK "$T/smol.gguf" "$T/smol" "$T/smol.log" --ref-gguf "$S" | sed "s/^/smollm2-f32 /"
else
  echo "skipped: SmolLM2 (no $S, or a sanitizer build)"
fi
echo "ok: test_export_gguf"

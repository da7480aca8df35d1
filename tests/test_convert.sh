#!/usr/bin/env bash
# qat convert --from llama2c on synthetic checkpoints written here with numpy:
# - malformed files (too short, truncated, negative dims, heads not dividing dim, kv heads not
#   dividing heads, odd head dim, a missing tokenizer) fail with exit 1, one line naming the file,
#   and leave no output directory (nor a temporary) behind;
# - a valid untied GQA checkpoint converts to a HF folder whose config and tensors match the
#   source (q/k rows permuted per head to rotate-half order), and whose perplexity under qat eval
#   equals the float64 numpy reference run on the ORIGINAL llama2.c file with interleaved RoPE;
# - qat eval with a missing data file names it.
set -euo pipefail
QAT=${QAT_BIN:-build/qat}
python3 -c 'import numpy' 2>/dev/null || { echo "skipped: python3 with numpy not found"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# write.py OUT dim hidden layers heads kv_heads vocab seq_len [trunc_bytes]: a llama2.c file with
# random weights (vocab < 0: untied classifier); sizes follow the header when it is sane.
cat > "$T/write.py" <<'PY'
import sys, struct, numpy as np
out = sys.argv[1]
C, F, L, H, Hkv, V, S = (int(x) for x in sys.argv[2:9])
trunc = int(sys.argv[9]) if len(sys.argv) > 9 else 0
rng = np.random.default_rng(1234)
hdr = struct.pack("<7i", C, F, L, H, Hkv, V, S)
body = b""
if min(C, F, L, H, Hkv, S) > 0 and V != 0 and C % H == 0:
    D = C // H; Va = abs(V)
    def w(*shape, std):
        return (rng.standard_normal(shape) * std).astype("<f4").tobytes()
    parts = [w(Va, C, std=1.0), (1 + 0.1 * rng.standard_normal((L, C))).astype("<f4").tobytes(),
             w(L, C, C, std=0.5), w(L, Hkv * D, C, std=0.5), w(L, Hkv * D, C, std=0.3),
             w(L, C, C, std=0.2), (1 + 0.1 * rng.standard_normal((L, C))).astype("<f4").tobytes(),
             w(L, F, C, std=0.3), w(L, C, F, std=0.2), w(L, F, C, std=0.3),
             np.ones(C, "<f4").tobytes(), w(S, D // 2, std=1.0), w(S, D // 2, std=1.0)]
    if V < 0:
        parts.append(w(Va, C, std=0.3))
    body = b"".join(parts)
data = hdr + body
if trunc:
    data = data[:len(data) - trunc]
open(out, "wb").write(data)
PY
gen() { python3 "$T/write.py" "$@"; }

# expect_fail NAME FILE [convert args...]: exit 1, one stderr line naming FILE, no output left.
expect_fail() {
  local name=$1 file=$2; shift 2
  local rc=0
  "$QAT" convert --from llama2c "$@" --out "$T/out_$name" 2> "$T/err" > /dev/null || rc=$?
  [ "$rc" -eq 1 ] || fail "$name: exit $rc, want 1 ($(cat "$T/err"))"
  [ "$(wc -l < "$T/err")" -eq 1 ] || fail "$name: want one error line, got: $(cat "$T/err")"
  grep -qF "$file" "$T/err" || fail "$name: error does not name $file: $(cat "$T/err")"
  compgen -G "$T/out_$name*" > /dev/null && fail "$name: output left behind: $(ls -d "$T"/out_"$name"*)"
  echo "ok   $name: $(cat "$T/err")"
}

printf 'abc' > "$T/short.bin"
expect_fail short "$T/short.bin" "$T/short.bin"
gen "$T/trunc.bin" 32 48 2 4 2 -67 24 4
expect_fail truncated "$T/trunc.bin" "$T/trunc.bin"
gen "$T/long.bin" 32 48 2 4 2 67 24
printf 'xxxx' >> "$T/long.bin"
expect_fail trailing "$T/long.bin" "$T/long.bin"
gen "$T/neg.bin" -32 48 2 4 2 67 24
expect_fail negative_dim "$T/neg.bin" "$T/neg.bin"
gen "$T/zero.bin" 32 48 0 4 2 67 24
expect_fail zero_layers "$T/zero.bin" "$T/zero.bin"
gen "$T/heads.bin" 30 48 2 4 2 67 24
expect_fail heads_not_dividing_dim "$T/heads.bin" "$T/heads.bin"
gen "$T/kv.bin" 32 48 2 4 3 67 24
expect_fail kv_not_dividing_heads "$T/kv.bin" "$T/kv.bin"
gen "$T/odd.bin" 36 48 2 4 2 67 24
expect_fail odd_head_dim "$T/odd.bin" "$T/odd.bin"
python3 -c "import struct; open('$T/huge.bin','wb').write(struct.pack('<7i', 2**30, 2**30, 2**30, 2**15, 2**15, 2**30, 2**30))"
expect_fail overflow "$T/huge.bin" "$T/huge.bin"
gen "$T/good.bin" 32 48 2 4 2 -67 24
expect_fail missing_tokenizer "$T/nope.tok" "$T/good.bin" --tokenizer "$T/nope.tok"
expect_fail missing_model "$T/absent.bin" "$T/absent.bin"

# A valid untied GQA model: dim 32, hidden 48, 2 layers, 4 heads, 2 kv heads (D = 8), vocab 67.
printf 'tok' > "$T/tok.bin"
"$QAT" convert --from llama2c "$T/good.bin" --tokenizer "$T/tok.bin" --out "$T/hf"
compgen -G "$T/hf.tmp*" > /dev/null && fail "temporary left beside the output"
python3 - "$T/good.bin" "$T/hf" <<'PY'
import sys, json, struct, numpy as np
src, d = sys.argv[1], sys.argv[2]
cfg = json.load(open(d + "/config.json"))
want = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=32,
            intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=67, max_position_embeddings=24, rms_norm_eps=1e-5,
            rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False, bos_token_id=1,
            eos_token_id=2, torch_dtype="float32")
for k, v in want.items():
    assert cfg.get(k) == v, f"config {k}: {cfg.get(k)!r} != {v!r}"
assert open(d + "/tokenizer.bin").read() == "tok"
buf = open(d + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", buf[:8])[0]
hdr = json.loads(buf[8:8 + n])
def t(name):
    h = hdr[name]; assert h["dtype"] == "F32", name
    b, e = h["data_offsets"]
    return np.frombuffer(buf[8 + n + b:8 + n + e], "<f4").reshape(h["shape"])
a = np.frombuffer(open(src, "rb").read()[28:], "<f4")
C, F, L, H, Hkv, V, D = 32, 48, 2, 4, 2, 67, 8
sizes = [V*C, L*C, L*C*C, L*Hkv*D*C, L*Hkv*D*C, L*C*C, L*C, L*F*C, L*C*F, L*F*C, C, 24*4, 24*4, V*C]
off = np.cumsum([0] + sizes)
part = lambda i, *s: a[off[i]:off[i + 1]].reshape(s)
emb, ra, wq, wk, wv, wo, rf, w1, w2, w3, fin = (part(0, V, C), part(1, L, C), part(2, L, C, C),
    part(3, L, Hkv*D, C), part(4, L, Hkv*D, C), part(5, L, C, C), part(6, L, C), part(7, L, F, C),
    part(8, L, C, F), part(9, L, F, C), part(10, C))
wcls = part(13, V, C)
def perm(nh):  # rotate-half row j <- interleaved row 2j, j + D/2 <- 2j + 1, per head
    return np.concatenate([h * D + np.concatenate([np.arange(0, D, 2), np.arange(1, D, 2)])
                           for h in range(nh)])
eq = lambda name, x: np.array_equal(t(name), x) or sys.exit(f"tensor {name} differs")
eq("model.embed_tokens.weight", emb); eq("model.norm.weight", fin); eq("lm_head.weight", wcls)
for l in range(L):
    p = f"model.layers.{l}."
    eq(p + "input_layernorm.weight", ra[l]); eq(p + "post_attention_layernorm.weight", rf[l])
    eq(p + "self_attn.q_proj.weight", wq[l][perm(H)]); eq(p + "self_attn.k_proj.weight", wk[l][perm(Hkv)])
    eq(p + "self_attn.v_proj.weight", wv[l]); eq(p + "self_attn.o_proj.weight", wo[l])
    eq(p + "mlp.gate_proj.weight", w1[l]); eq(p + "mlp.up_proj.weight", w3[l])
    eq(p + "mlp.down_proj.weight", w2[l])
assert len([k for k in hdr if k != "__metadata__"]) == 3 + 9 * L, "unexpected tensor count"
print("ok   config.json and tensors match the llama2.c source (q/k permuted per head)")
PY

# Perplexity of the converted model vs the numpy reference on the original llama2.c weights.
python3 -c "import numpy as np; np.save('$T/tok.npy', np.random.default_rng(5).integers(0, 67, 24*5+7).astype(np.uint16))"
ev=$("$QAT" eval --model "$T/hf" --data "$T/tok.npy" --seq-len 24 --batch 2 --json --device cpu)
ref=$(python3 tests/ref/llama_ref.py --llama2c "$T/good.bin" --data "$T/tok.npy" --seq-len 24)
evw=$("$QAT" eval --model "$T/hf" --data "$T/tok.npy" --seq-len 24 --max-windows 3 --json --device cpu)
refw=$(python3 tests/ref/llama_ref.py --model "$T/hf" --data "$T/tok.npy" --seq-len 24 --max-windows 3)
python3 - "$ev" "$ref" "$evw" "$refw" <<'PY'
import json, sys
ev, ref, evw, refw = (json.loads(s) for s in sys.argv[1:5])
assert (ev["windows"], ev["tokens"]) == (5, 5 * 23), ev
assert (evw["windows"], evw["tokens"]) == (3, 3 * 23), evw
# float32 forward vs float64 reference: 1e-4 relative is far above float32 rounding at dim 32
# and far below the effect of a wrong RoPE layout or a wrong classifier.
for a, b, what in ((ev, ref, "all windows, batch 2, vs llama2.c file"),
                   (evw, refw, "--max-windows 3 vs HF folder")):
    rel = abs(a["nll"] - b["nll"]) / b["nll"]
    print(f"{'ok  ' if rel < 1e-4 else 'FAIL'} nll {a['nll']:.6f} vs ref {b['nll']:.6f} ({what}): rel {rel:.1e}")
    assert rel < 1e-4
PY

# Errors of qat eval name the file.
rc=0
"$QAT" eval --model "$T/hf" --data "$T/missing.npy" --device cpu 2> "$T/err" > /dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "eval with a missing data file: exit $rc, want 1"
grep -qF "$T/missing.npy" "$T/err" || fail "eval error does not name the data file: $(cat "$T/err")"
echo "ok   eval missing data: $(cat "$T/err")"
echo "test_convert: all checks passed"

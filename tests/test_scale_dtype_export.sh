#!/usr/bin/env bash
# quant.scale_dtype on stories260K (skipped without the assets): runs trained a few steps with
# f16 step sizes export exactly to the formats that store F16 scales; with f32 (the default) the
# exports report the F16 rounding they cause, and the report equals what an independent reader
# measures. Readers: llama.cpp's own `gguf` package (tests/ref/gguf_export_check.py: every tensor
# through gguf.quants.dequantize against the run's fake-quant export, the printed per-tensor
# "max weight change" equal to the measured one) and the numpy GPTQ reader of
# tests/ref/gptq_pack_ref.py (tests/ref/gptq_export_check.py, same comparison, bit for bit
# with --exact).
# - qat W4 g32 sym -> GGUF Q4_0: f16 reports 0 for every tensor and the dequantized file equals
#   the fake-quant weights exactly; f32 reports a non-zero change (and is that far off);
# - qat W4 g32 asym -> GGUF Q4_1: d = s is exact under f16, but m = -s z is stored in F16 too and
#   s z (11 + 4 significant bits) is not always an F16 number: the change is reported, not 0;
# - qat W8 per-channel asym and sym -> GPTQ gptq_v2 from the checkpoint (stories260K's
#   down_proj has 172 in features, which W2/W3/W4 do not pack into whole int32 words; W8 does):
#   f16 bit-identical, f32 non-zero; W4 g32 is refused in one line (down_proj is not whole
#   groups), nothing left behind;
# - the other ways s is set, each exported to Q4_0 exactly under f16: methods block_ap, e2e_qp
#   (from RTN codes) and pipeline (Block-AP then E2E-QP), method gptq, and the spec option (an fp folder exported with --quant
#   rtn:4g32:sym:f16, against `qat quantize --quant rtn:4g32:sym:f16`);
# - the step sizes stored in an f16 run's checkpoint are all F16 numbers, and dist.zero: 1 (the
#   projection of the owned slice, one process) stores the same ones bit for bit.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
. "$(dirname "$0")/lib_stories260k.sh"
export PYTHONPATH="$PWD/tests/ref"
GG="python3 tests/ref/gguf_export_check.py"
GQ="python3 tests/ref/gptq_export_check.py"

run() { # tag method quant-yaml [extra yaml lines]
  cat > "$T/$1.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 64}
method: $2
quant: $3
train: {steps: 3, batch: 2, lr: 1e-3, lr_quant: ${LRQ:-1e-3}, warmup: 1, eval_windows: 1}
block_ap: {samples: 8, epochs: 1, batch: 2, lr_w: 1e-3, lr_quant: 1e-3}
e2e_qp: {steps: 2, batch: 2, grad_accum: 1, lr: 1e-3}
gptq: {samples: 4, batch: 2}
checkpoint: {dir: $T/run-$1, every: 1000, keep: 1}
YAML
  "$QAT" train "$T/$1.yaml" > "$T/$1.train.log" 2>&1 || { cat "$T/$1.train.log"; exit 1; }
  "$QAT" export --checkpoint "$T/run-$1" --out "$T/fq-$1" > /dev/null
}
# the largest per-tensor change an export log reports
reported() { grep -o "max weight change [0-9.e+-]*" "$1" | awk '{ if ($4 > m) m = $4 } END { print m + 0 }'; }
nonzero() { # log tag
  local r; r=$(reported "$1")
  python3 -c "import sys; sys.exit(0 if float('$r') > 0 else 1)" ||
    { echo "FAIL: $2: f32 scales should report an F16 rounding change, got $r"; exit 1; }
  echo "ok: $2 reports a largest weight change of $r"
}
zero() { # log tag
  local r; r=$(reported "$1")
  [ "$r" = 0 ] || { echo "FAIL: $2: reported $r, want 0"; exit 1; }
  [ "$(grep -c 'max weight change 0 \|max weight change 0$' "$1")" -gt 0 ] || { echo "FAIL: $2: no per-tensor report"; exit 1; }
  echo "ok: $2 reports 0 for every tensor"
}
gguf() { # tag qtype [--exact]
  "$QAT" export --format gguf --checkpoint "$T/run-$1" --out "$T/$1.gguf" > "$T/$1.gguf.log"
  $GG "$T/$1.gguf" "$T/fq-$1" "$T/$1.gguf.log" --qtype "$2" ${3:-} | sed "s/^/$1 /"
}

# 1. W4 g32 sym -> Q4_0
for sdt in f16 f32; do run q40-$sdt qat "{bits: 4, group: 32, sym: true, scale_dtype: $sdt}"; done
gguf q40-f16 Q4_0 --exact
zero "$T/q40-f16.gguf.log" "Q4_0 f16"
gguf q40-f32 Q4_0
nonzero "$T/q40-f32.gguf.log" "Q4_0 f32"

# the checkpoint's step sizes are F16 numbers
python3 - "$T/run-q40-f16" <<'PY'
import glob, sys
import numpy as np
import st_np
n = 0
for f in glob.glob(sys.argv[1] + "/ckpt-*/*.safetensors"):
    t, _, _ = st_np.read(f)
    for k, v in t.items():
        if k.endswith(".scales") and not k.startswith("optim."):  # not the moments
            v = v.astype(np.float32)
            assert np.array_equal(v.astype(np.float16).astype(np.float32), v), k
            n += v.size
assert n > 0, "no .scales in the checkpoint"
print(f"ok: the f16 checkpoint's {n} step sizes are all F16 numbers")
PY
# ZeRO-1 projects its owned slice before the all-gather: one process, the same step sizes
"$QAT" train "$T/q40-f16.yaml" checkpoint.dir="$T/run-q40z" dist.zero=1 > "$T/q40z.log" 2>&1 ||
  { cat "$T/q40z.log"; exit 1; }
python3 - "$T/run-q40-f16" "$T/run-q40z" <<'PY'
import glob, sys
import numpy as np
import st_np
def scales(d):
    out = {}
    for f in sorted(glob.glob(d + "/ckpt-*/*.safetensors")):
        t, _, _ = st_np.read(f)
        out.update({k: v for k, v in t.items() if k.endswith(".scales") and not k.startswith("optim.")})
    return out
a, b = scales(sys.argv[1]), scales(sys.argv[2])
assert a.keys() == b.keys() and a, (len(a), len(b))
for k in a:
    assert np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32)), k
print(f"ok: dist.zero 1 gives the same {len(a)} step-size tensors bit for bit")
PY

# 2. W4 g32 asym -> Q4_1: within the reported error, which f16 scales do not make 0
for sdt in f16 f32; do run q41-$sdt qat "{bits: 4, group: 32, sym: false, scale_dtype: $sdt}"; done
gguf q41-f16 Q4_1
gguf q41-f32 Q4_1
echo "ok: Q4_1 largest weight change (m = -s z in F16): f16 $(reported "$T/q41-f16.gguf.log"), f32 $(reported "$T/q41-f32.gguf.log")"

# 3. W8 per-channel -> GPTQ from the checkpoint (lr_quant 1e-5: 8-bit step sizes are ~1e-3, and a
#    1e-3 AdamW step would push f32 ones below zero, which the packed formats refuse)
for spec in "asym false" "sym true"; do
  set -- $spec
  for sdt in f16 f32; do LRQ=1e-5 run w8$1-$sdt qat "{bits: 8, group: -1, sym: $2, scale_dtype: $sdt}"; done
  "$QAT" export --format gptq --checkpoint "$T/run-w8$1-f16" --out "$T/gq-w8$1-f16" > "$T/w8$1-f16.gptq.log"
  $GQ "$T/gq-w8$1-f16" "$T/fq-w8$1-f16" "$T/w8$1-f16.gptq.log" --exact | sed "s/^/w8$1-f16 /"
  zero "$T/w8$1-f16.gptq.log" "gptq W8 $1 f16"
  "$QAT" export --format gptq --checkpoint "$T/run-w8$1-f32" --out "$T/gq-w8$1-f32" > "$T/w8$1-f32.gptq.log"
  $GQ "$T/gq-w8$1-f32" "$T/fq-w8$1-f32" "$T/w8$1-f32.gptq.log" | sed "s/^/w8$1-f32 /"
  nonzero "$T/w8$1-f32.gptq.log" "gptq W8 $1 f32"
  [ -z "$(ls -d "$T"/gq-w8$1-f16.packed* 2>/dev/null)" ] || { echo "FAIL: packed intermediate left behind"; exit 1; }
done

# 4. the other methods that set s: Block-AP + E2E-QP, GPTQ, qat quantize's RTN
for method in block_ap e2e_qp pipeline; do # (E2E-QP would mask a Block-AP without the projection)
  run $method-f16 $method "{bits: 4, group: 32, sym: true, scale_dtype: f16}"
  gguf $method-f16 Q4_0 --exact
  zero "$T/$method-f16.gguf.log" "method $method f16"
done
run gptq-f16 gptq "{bits: 4, group: 32, sym: true, scale_dtype: f16}"
gguf gptq-f16 Q4_0 --exact
zero "$T/gptq-f16.gguf.log" "method gptq f16"
"$QAT" quantize --model "$T/m" --quant rtn:4g32:sym:f16 --out "$T/rtn16" > /dev/null 2>&1
"$QAT" export --format gguf --model "$T/m" --quant rtn:4g32:sym:f16 --out "$T/rtn16.gguf" > "$T/rtn16.log"
$GG "$T/rtn16.gguf" "$T/rtn16" "$T/rtn16.log" --qtype Q4_0 --exact | sed "s/^/rtn:4g32:sym:f16 /"
zero "$T/rtn16.log" "qat quantize rtn:4g32:sym:f16"

# a run whose Linears do not pack into whole int32 words: one line, exit 1, nothing left behind
set +e; out=$("$QAT" export --format gptq --checkpoint "$T/run-q40-f16" --out "$T/bad" 2>&1 >/dev/null); rc=$?; set -e
[ $rc = 1 ] && echo "$out" | grep -q "down_proj: group 32 does not divide the 172 input columns" && [ "$(echo "$out" | wc -l)" = 1 ] ||
  { echo "FAIL: W4 g32 gptq export of stories260K: exit $rc, '$out'"; exit 1; }
[ -z "$(ls -d "$T"/bad* 2>/dev/null)" ] || { echo "FAIL: output or packed intermediate left behind"; exit 1; }
echo "ok: refused in one line ($out)"

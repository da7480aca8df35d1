#!/usr/bin/env bash
# qat quantize (RTN) end to end against the numpy reference of REFERENCE.md section 1:
# asym and sym, several bits and group sizes incl. per-channel and partial groups, all-zero groups,
# min-max and MSE (clipping search) init,
# F32/F16/BF16 files, other tensors and files copied unchanged, and bad input leaving nothing.
set -euo pipefail
QAT=${QAT_BIN:-build/qat}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export PYTHONPATH="$PWD/tests/ref"

python3 - "$T" <<'PY'
import json, os, sys
import numpy as np
import st_np
d = sys.argv[1]
rng = np.random.default_rng(0)
for dt in ["F32", "F16", "BF16"]:
    m = os.path.join(d, "m_" + dt)
    os.makedirs(m)
    t = {
        "model.embed_tokens.weight": rng.normal(0, 1, (11, 40)),
        "model.layers.0.self_attn.q_proj.weight": rng.normal(0, 0.05, (40, 40)),
        "model.layers.0.self_attn.k_proj.weight": rng.normal(0, 0.05, (8, 40)),
        "model.layers.0.mlp.down_proj.weight": rng.normal(0, 0.05, (40, 24)),
        "model.layers.0.mlp.gate_proj.weight": np.zeros((24, 40)),  # all-zero groups
        "model.layers.0.input_layernorm.weight": np.ones(40),
        "model.norm.weight": rng.normal(1, 0.1, 40),
    }
    t["model.layers.0.mlp.gate_proj.weight"][3, 5] = 0.5  # one non-zero group
    st_np.write(os.path.join(m, "model.safetensors"), t, dt)
    json.dump({"model_type": "llama"}, open(os.path.join(m, "config.json"), "w"))
    open(os.path.join(m, "tokenizer.bin"), "wb").write(b"\x01\x02\x03")
PY

check() { # dtype bits group sym
  local dt=$1 bits=$2 group=$3 sym=$4 out="$T/out_$1_$2_$3_$4"
  local flag=""; [ "$sym" = 1 ] && flag="--sym"
  "$QAT" quantize --model "$T/m_$dt" --out "$out" --bits "$bits" --group "$group" $flag > "$out.log"
  python3 - "$T/m_$dt" "$out" "$bits" "$group" "$sym" "$dt" <<'PY'
import filecmp, os, sys
import numpy as np
import st_np, rtn_ref
src, out, bits, group, sym, dt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
a, _, da = st_np.read(os.path.join(src, "model.safetensors"))
b, _, db = st_np.read(os.path.join(out, "model.safetensors"))
assert list(a) == list(b), "tensor names/order changed"
assert da == db, "dtypes changed"
def to_dtype(x):
    x = x.astype(np.float32)
    if dt == "F16": return x.astype(np.float16).astype(np.float64)
    if dt == "BF16":
        return (st_np.bf16_bits(x).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return x.astype(np.float64)
nq = 0
for name in a:
    if "_proj" in name:
        ref = to_dtype(rtn_ref.fake_quant(a[name], bits, group, sym))
        err = np.abs(ref - b[name]).max() / (np.abs(ref).max() + 1e-30)
        # the output is the reference rounded to the file dtype: equal up to one ulp of that
        # dtype where float32 arithmetic order differs (F32: exact up to 1e-6 relative)
        tol = {"F32": 1e-6, "F16": 1e-3, "BF16": 8e-3}[dt]
        assert np.isfinite(b[name]).all(), name + ": non-finite output"
        assert err <= tol, f"{name}: normalized error {err:.3g} > {tol} (W{bits} g{group} sym={sym} {dt})"
        nq += 1
    else:
        assert np.array_equal(a[name], b[name]), name + " changed"
g = b["model.layers.0.mlp.gate_proj.weight"]
assert (np.delete(g, 3, axis=0) == 0).all(), "all-zero groups must stay zero"
assert nq == 4
assert filecmp.cmp(os.path.join(src, "tokenizer.bin"), os.path.join(out, "tokenizer.bin"), shallow=False)
assert os.path.exists(os.path.join(out, "qat_quant.json"))
PY
}

for dt in F32 F16 BF16; do
  check $dt 4 16 0      # partial trailing group (40 = 2 x 16 + 8)
done
check F32 2 8 0
check F32 3 32 1
check F32 8 -1 0        # per-channel
check F32 4 0 1         # per-tensor
check F32 2 -1 1
check BF16 3 128 0      # one partial group per row

# MSE init (GPTQ clipping search) against rtn_ref's: the output must be the reference fake-quant,
# except in groups where the two pick different candidates at a near-tie (float sums in qat, float64
# in the reference): there the group's error sum |w_hat - w|^2.4 must be within 1e-6 relative of the
# reference's minimum (qat's |e|^2.4 is accurate to 4e-7). Such groups must stay rare.
check_mse() { # how (--quant SPEC | flags...) ; bits group sym
  local out="$T/out_mse_$2_$3_$4"
  if [ "$1" = spec ]; then
    "$QAT" quantize --model "$T/m_F32" --out "$out" --quant "$5" > "$out.log"
  else
    local flag=""; [ "$4" = 1 ] && flag="--sym"
    "$QAT" quantize --model "$T/m_F32" --out "$out" --bits "$2" --group "$3" $flag --init mse > "$out.log"
  fi
  python3 - "$T/m_F32" "$out" "$2" "$3" "$4" <<'PY'
import json, os, sys
import numpy as np
import st_np, rtn_ref
src, out, bits, group, sym = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
a, _, _ = st_np.read(os.path.join(src, "model.safetensors"))
b, _, _ = st_np.read(os.path.join(out, "model.safetensors"))
ngroups = ndiff = nclip = 0
for name in a:
    if "_proj" not in name:
        assert np.array_equal(a[name], b[name]), name + " changed"
        continue
    w = a[name].astype(np.float32)
    for rs, cs in rtn_ref.blocks(w.shape, group):
        x, got = w[rs, cs], b[name][rs, cs]
        s, z, i, err = rtn_ref.init_sz(x, bits, sym, "mse")
        ref = rtn_ref.forward(x, s, z, bits, sym)
        ngroups += 1
        nclip += i > 0
        if np.abs(ref - got).max() <= 1e-6 * (np.abs(ref).max() + 1e-30):
            continue
        ndiff += 1
        e = rtn_ref.group_err(x, got)
        assert abs(e - err) <= 1e-6 * err, f"{name} {rs} {cs}: error {e:.9g} vs reference {err:.9g}"
        mm = rtn_ref.group_err(x, rtn_ref.forward(x, *rtn_ref.init_sz(x, bits, sym)[:2], bits, sym))
        assert e <= mm * (1 + 1e-6), f"{name}: error {e:.9g} above min-max {mm:.9g}"
assert ndiff * 50 <= ngroups, f"{ndiff} of {ngroups} groups differ from the reference's choice"
assert nclip > 0, "no group clipped: the search did nothing"
rec = json.load(open(os.path.join(out, "qat_quant.json")))
assert rec["init"] == "mse" and rec["bits"] == bits and rec["group"] == group and rec["sym"] == sym, rec
assert rec["spec"].endswith(":mse"), rec
print(f"mse W{bits} g{group} sym={int(sym)}: {ngroups} groups, {nclip} clipped, {ndiff} near-tie choices")
PY
}
check_mse spec 2 32 0 rtn:2g32:mse
check_mse spec 3 16 1 rtn:3g16:sym:mse
check_mse spec 4 128 0 rtn:4g128:mse
check_mse spec 2 -1 0 rtn:2gc:mse
check_mse spec 2 0 1 rtn:2gt:sym:mse
check_mse flags 2 8 0
# min-max stays the default: no --init is the same file as --init minmax
"$QAT" quantize --model "$T/m_F32" --out "$T/o_mm" --bits 2 --group 32 --init minmax > /dev/null
"$QAT" quantize --model "$T/m_F32" --out "$T/o_dflt" --bits 2 --group 32 > /dev/null
cmp "$T/o_mm/model.safetensors" "$T/o_dflt/model.safetensors" || { echo "--init minmax is not the default"; exit 1; }
grep -q '"init": "minmax"' "$T/o_dflt/qat_quant.json" || { echo "init not recorded"; exit 1; }

# errors: exit 1 or 2, one line naming the problem, nothing left at --out
set +e
printf 'garbage' > "$T/bad.safetensors"; mkdir -p "$T/m_bad"; cp "$T/bad.safetensors" "$T/m_bad/model.safetensors"
"$QAT" quantize --model "$T/m_bad" --out "$T/o_bad" 2> "$T/err"; rc=$?
[ $rc = 1 ] || { echo "malformed input: exit $rc"; exit 1; }
[ "$(wc -l < "$T/err")" = 1 ] || { echo "expected one error line:"; cat "$T/err"; exit 1; }
grep -q "model.safetensors" "$T/err" || { echo "error does not name the file"; cat "$T/err"; exit 1; }
[ ! -e "$T/o_bad" ] || { echo "output left behind"; exit 1; }
ls "$T" | grep -q "o_bad.tmp" && { echo "temporary left behind"; exit 1; }
"$QAT" quantize --model "$T/m_F32" --out "$T/o2" --bits 9 2> "$T/err"; rc=$?
[ $rc = 2 ] || { echo "bad --bits: exit $rc"; exit 1; }
"$QAT" quantize --model "$T/m_F32" --out "$T/o2" --init gptq 2> "$T/err"; rc=$?
[ $rc = 2 ] && grep -q "gptq" "$T/err" || { echo "bad --init: exit $rc"; cat "$T/err"; exit 1; }
"$QAT" quantize --model "$T/m_F32" --out "$T/o2" --quant rtn:2g32:mse --bits 2 2> "$T/err"; rc=$?
[ $rc = 2 ] && grep -q -- "--bits" "$T/err" || { echo "--quant with --bits: exit $rc"; cat "$T/err"; exit 1; }
"$QAT" quantize --model "$T/m_F32" --out "$T/o2" --quant rtn:2g32:msx 2> "$T/err"; rc=$?
[ $rc = 2 ] && grep -q "msx" "$T/err" || { echo "bad --quant: exit $rc"; cat "$T/err"; exit 1; }
"$QAT" quantize --model "$T/m_F32" --out "$T/o2" --bitz 4 2> "$T/err"; rc=$?
[ $rc = 2 ] && grep -q -- "--bitz" "$T/err" || { echo "unknown flag not named"; exit 1; }
"$QAT" quantize --model "$T/missing" --out "$T/o3" 2> "$T/err"; rc=$?
[ $rc = 1 ] && grep -q "missing" "$T/err" || { echo "missing model not named"; cat "$T/err"; exit 1; }
# NaN weight: named
python3 - "$T" <<'PY'
import os, sys, json
import numpy as np
import st_np
m = os.path.join(sys.argv[1], "m_nan"); os.makedirs(m)
w = np.ones((4, 8)); w[1, 2] = np.nan
st_np.write(os.path.join(m, "model.safetensors"), {"model.layers.0.self_attn.o_proj.weight": w})
PY
"$QAT" quantize --model "$T/m_nan" --out "$T/o4" 2> "$T/err"; rc=$?
[ $rc = 1 ] && grep -q "o_proj" "$T/err" || { echo "NaN weight not named"; cat "$T/err"; exit 1; }
[ ! -e "$T/o4" ] || { echo "output left behind after NaN"; exit 1; }
echo "quantize: all checks passed"

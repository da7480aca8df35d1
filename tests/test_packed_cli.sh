#!/usr/bin/env bash
# qat quantize --packed end to end on stories260K (skipped without the assets): every decoder
# Linear written as packed codes, read by the independent numpy reader tests/ref/packed_ref.py,
# equals the fake-quant folder `qat quantize` writes with the same spec: bit for bit with F32
# scales, within the F16 rounding of s with F16 scales; asym / sym, 2 / 3 / 4 / 8 bits, group 4
# (not a multiple of 8: the portable decode) and per-channel. Non-Linear tensors are copied
# unchanged; qat inspect reports the same bits per weight as the reader; a group that does not
# divide the input columns (172) fails with one line naming the tensor and leaves no folder.
set -euo pipefail
source "$(dirname "$0")/lib_stories260k.sh"
export PYTHONPATH="$PWD/tests/ref"
M=$T/m
for spec in "4 4 asym f32" "3 -1 asym f32" "2 4 sym f32" "8 4 asym f16" "4 -1 sym f16"; do
  set -- $spec
  bits=$1 group=$2 sym=$3 sdt=$4
  flag=""; [ "$sym" = sym ] && flag="--sym"
  tag="b${bits}g${group}${sym}${sdt}"
  "$QAT" quantize --model "$M" --out "$T/fq_$tag" --bits "$bits" --group "$group" $flag >/dev/null
  "$QAT" quantize --model "$M" --out "$T/pk_$tag" --bits "$bits" --group "$group" $flag \
    --packed --scale-dtype "$sdt" >/dev/null
  mode=exact; [ "$sdt" = f16 ] && mode=f16
  python3 tests/ref/packed_ref.py "$T/pk_$tag/model.safetensors" "$T/fq_$tag/model.safetensors" \
    $mode > "$T/ref_$tag.log" || { cat "$T/ref_$tag.log"; echo "FAIL: $tag"; exit 1; }
  n=$(grep -c ': ok' "$T/ref_$tag.log")
  [ "$n" = 35 ] || { echo "FAIL: $tag: $n of 35 Linears checked"; exit 1; }
  ref_bpw=$(sed -n 's/^bits per weight //p' "$T/ref_$tag.log")
  qat_bpw=$("$QAT" inspect "$T/pk_$tag" | sed -n 's/^packed: .*, \([0-9.]*\) bits .*/\1/p')
  [ "$ref_bpw" = "$qat_bpw" ] || { echo "FAIL: $tag: inspect $qat_bpw bits/weight, reader $ref_bpw"; exit 1; }
  # the other tensors: unchanged
  python3 - "$M/model.safetensors" "$T/pk_$tag/model.safetensors" <<'PY'
import sys, numpy as np, st_np
a, _, _ = st_np.read(sys.argv[1]); b, _, _ = st_np.read(sys.argv[2])
keep = [n for n in a if not n.endswith("_proj.weight")]
assert keep and all(np.array_equal(a[n], b[n]) for n in keep), "non-Linear tensors changed"
assert not any(n.endswith("_proj.weight") for n in b), "fake-quant Linear left in a packed file"
PY
  grep -q '"format": "packed"' "$T/pk_$tag/qat_quant.json"
  echo "ok: $tag ($qat_bpw bits/weight)"
done
set +e
out=$("$QAT" quantize --model "$M" --out "$T/bad" --bits 4 --group 32 --packed 2>&1 >/dev/null)
rc=$?
set -e
[ $rc = 1 ] || { echo "FAIL: group 32 of 172 columns: exit $rc"; exit 1; }
echo "$out" | grep -q 'down_proj.weight.*does not divide' || { echo "FAIL: message: $out"; exit 1; }
[ "$(echo "$out" | grep -c error)" = 1 ] || { echo "FAIL: not one error line: $out"; exit 1; }
[ ! -e "$T/bad" ] || { echo "FAIL: output folder left behind"; exit 1; }
echo "ok: refused group 32 on 172 columns"

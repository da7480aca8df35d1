#!/usr/bin/env bash
# qat export --format gptq from a `qat quantize --packed` folder, checked by the independent
# numpy reader tests/ref/gptq_pack_ref.py (REFERENCE.md section 10): config.json's
# quantization_config, shapes/dtypes, g_idx, weights bit-identical to the packed folder's (F16
# scales) and within F16 rounding of the fake-quant folder's; other tensors unchanged. Bits 2, 3
# (the 96-bit stream), 4, 8; sym and asym; groups 32, 64, 128 and per-channel; F16 and F32
# packed scales. Refusals: shapes whose in or out features times bits are not whole words, a
# folder that is not packed; each one line, exit 1, no output folder.
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
rng = np.random.default_rng(1)
for name, shapes in [("m", {"q": (96, 128), "k": (32, 128), "gate": (256, 128), "down": (128, 256)}),
                     ("odd", {"q": (40, 128)})]:
    m = os.path.join(d, name); os.makedirs(m)
    t = {"model.embed_tokens.weight": rng.normal(0, 1, (11, 128)),
         "model.norm.weight": rng.normal(1, 0.1, 128)}
    for lin, sh in shapes.items():
        part = "self_attn" if lin in "qkvo" else "mlp"
        t[f"model.layers.0.{part}.{lin}_proj.weight"] = rng.normal(0, 0.05, sh)
    st_np.write(os.path.join(m, "model.safetensors"), t, "F32")
    json.dump({"model_type": "llama", "hidden_size": 128}, open(os.path.join(m, "config.json"), "w"))
    open(os.path.join(m, "tokenizer.json"), "w").write("{}")
PY
for spec in "4 128 asym f16" "4 32 sym f32" "3 64 asym f16" "3 -1 sym f16" "2 64 asym f32" "8 32 asym f16"; do
  set -- $spec
  flag=""; [ "$3" = sym ] && flag="--sym"
  tag="b$1g$2$3$4"
  "$QAT" quantize --model "$T/m" --out "$T/fq_$tag" --bits $1 --group $2 $flag >/dev/null
  "$QAT" quantize --model "$T/m" --out "$T/pk_$tag" --bits $1 --group $2 $flag --packed --scale-dtype $4 >/dev/null
  "$QAT" export --format gptq --model "$T/pk_$tag" --out "$T/gq_$tag" > "$T/ex_$tag.log"
  python3 tests/ref/gptq_pack_ref.py "$T/gq_$tag" "$T/pk_$tag" "$T/fq_$tag" > "$T/ref_$tag.log" \
    || { cat "$T/ref_$tag.log"; echo "FAIL: $tag"; exit 1; }
  [ "$(grep -c ': ok' "$T/ref_$tag.log")" = 4 ] || { cat "$T/ref_$tag.log"; echo "FAIL: $tag count"; exit 1; }
  cmp -s "$T/m/tokenizer.json" "$T/gq_$tag/tokenizer.json"
  echo "ok: $tag"
done
refuse() { # want-substring cmd...
  local want=$1; shift
  set +e; out=$("$@" 2>&1 >/dev/null); rc=$?; set -e
  [ $rc = 1 ] || { echo "FAIL: exit $rc for $*"; exit 1; }
  echo "$out" | grep -q "$want" || { echo "FAIL: message '$out' lacks '$want'"; exit 1; }
  [ "$(echo "$out" | wc -l)" = 1 ] || { echo "FAIL: not one line: $out"; exit 1; }
  [ ! -e "$T/bad" ] || { echo "FAIL: output left behind"; exit 1; }
}
"$QAT" quantize --model "$T/odd" --out "$T/pk_odd" --bits 3 --group 32 --packed >/dev/null
refuse "multiples of 32" "$QAT" export --format gptq --model "$T/pk_odd" --out "$T/bad"
refuse "no qat_packed metadata" "$QAT" export --format gptq --model "$T/fq_b4g128asymf16" --out "$T/bad"
echo "ok: refusals"

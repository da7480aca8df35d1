#!/usr/bin/env bash
# make demo: the main job on the embedded default. Takes stories260K (from $QAT_ASSETS,
# ../shared/assets, or its public home), converts it to a Hugging Face folder, tokenizes the
# TinyStories text (first 90% of documents for training, the last 10% held out: REFERENCE.md
# section 5), then QAT at W4 g32 and W2 g32 and GPTQ at the same formats, and prints fp vs RTN vs
# GPTQ vs QAT held-out perplexity.
# Writes runs/demo/summary.json. Minutes on 2 CPU cores.
set -euo pipefail
QAT=${1:-build/qat}
. "$(dirname "$0")/lib_demo.sh"
OUT=runs/demo
mkdir -p "$OUT"

assets=$(find_assets stories260K/stories260K.bin)
if [ -z "$assets" ]; then
  assets=$OUT/assets
  mkdir -p "$assets/stories260K" "$assets/text"
  hf=https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K
  echo "demo: downloading stories260K from $hf"
  curl -fsSL -o "$assets/stories260K/stories260K.bin" "$hf/stories260K.bin"
  curl -fsSL -o "$assets/stories260K/tok512.bin" "$hf/tok512.bin"
  curl -fsSL -o "$assets/text/tinystories_val.txt" \
    https://raw.githubusercontent.com/yuninxia/moe-routing-bench/bb9bb0bd/data/tinystories_val.txt
fi
echo "demo: assets from $assets"

"$QAT" convert --from llama2c "$assets/stories260K/stories260K.bin" \
  --tokenizer "$assets/stories260K/tok512.bin" --out "$OUT/stories260k"
for split in train heldout; do
  "$QAT" tokenize --tokenizer "$assets/stories260K/tok512.bin" \
    --in "$assets/text/tinystories_val.txt" --docs blank-line --split $split \
    --out "$OUT/tinystories_$split.npy"
done

for cfg in w4g32 w2g32; do
  echo
  echo "demo: QAT $cfg (configs/stories260k-$cfg-qat.yaml)"
  # a fresh run each time: the demo measures, it does not resume
  rm -rf "$OUT/$cfg"
  "$QAT" train "configs/stories260k-$cfg-qat.yaml" checkpoint.dir="$OUT/$cfg"
done

# the PTQ baseline with calibration data: GPTQ (MSE grid, as the QAT recipes' init) on 128
# windows of the training split, evaluated like the trained models
for b in 4 2; do
  echo
  echo "demo: GPTQ W${b} g32 (qat quantize --method gptq)"
  rm -rf "$OUT/gptq-w${b}g32"
  "$QAT" quantize --method gptq --model "$OUT/stories260k" --out "$OUT/gptq-w${b}g32" \
    --bits "$b" --group 32 --init mse --calib "$OUT/tinystories_train.npy" --samples 128 \
    --seq-len 512 --device cpu
  "$QAT" eval --model "$OUT/gptq-w${b}g32" --data "$OUT/tinystories_heldout.npy" --seq-len 512 \
    --device cpu --json > "$OUT/gptq-w${b}g32.json"
done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
s = {}
for k, d in (("w4", "w4g32"), ("w2", "w2g32")):
    r = json.load(open(f"{out}/{d}/results.json"))
    g = json.load(open(f"{out}/gptq-{d}.json"))
    s[k] = {"fp": r["fp"]["ppl"], "rtn": r["rtn"]["ppl"], "gptq": g["ppl"], "qat": r["qat"]["ppl"]}
json.dump(s, open(f"{out}/summary.json", "w"), indent=1)
print()
print("held-out perplexity (TinyStories, last 10% of documents, stories260K)")
print(f"{'':6} {'fp':>8} {'RTN':>10} {'GPTQ':>10} {'QAT':>8}")
for k in ("w4", "w2"):
    print(f"{k.upper()}g32 {s[k]['fp']:8.3f} {s[k]['rtn']:10.3f} {s[k]['gptq']:10.3f} {s[k]['qat']:8.3f}")
print(f"\nwritten {out}/summary.json")
PY

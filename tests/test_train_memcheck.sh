#!/usr/bin/env bash
# The memory check at the start of every training job (trainer.c qat_train_check_memory), on
# stories260K (skipped without the assets):
# - a job whose estimate cannot fit (batch x seq_len huge on the tiny model, for method qat and
#   for Block-AP through its activation cache budget) fails at start, before anything is
#   allocated or written: a non-zero exit, a one-line message with the needed and free memory
#   per component, and no run directory;
# - a job that fits logs its estimate as one line and runs;
# - E2E-QP's estimate is planned for its own windows (e2e_qp.seq_len), not data.seq_len's.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
. "$(dirname "$0")/lib_stories260k.sh"
cat > "$T/c.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 64}
method: qat
quant: {bits: 2, group: 32}
train: {steps: 2, batch: 2, eval_windows: 2, seed: 3}
block_ap: {samples: 4, epochs: 1, batch: 2, val_samples: 2}
e2e_qp: {steps: 2, batch: 2}
checkpoint: {dir: $T/run}
YAML

# too big: exit non-zero, the numbers in one line, no run directory
big() { # phase-pattern args...
  local pat=$1; shift
  set +e; "$QAT" train "$T/c.yaml" checkpoint.dir="$T/bad" "$@" > /dev/null 2> "$T/err"; rc=$?; set -e
  [ $rc != 0 ] || { echo "expected a failure for $*"; exit 1; }
  line=$(grep "error:" "$T/err" || true)
  [ "$(printf '%s\n' "$line" | grep -c .)" = 1 ] || { echo "expected one error line for $*:"; cat "$T/err"; exit 1; }
  for p in "not enough .* memory for $pat" "needs [0-9.]* GB (model [0-9.]* GB, teacher [0-9.]* GB, activation cache [0-9.]* GB, optimizer [0-9.]* GB)" "but [0-9.]* GB are free of [0-9.]* GB"; do
    printf '%s\n' "$line" | grep -q -- "$p" || { echo "error for $* lacks /$p/:"; cat "$T/err"; exit 1; }
  done
  # the numbers: needed > free
  python3 - "$line" <<'PY'
import re, sys
l = sys.argv[1]
need = float(re.search(r"needs ([0-9.]+) GB", l).group(1))
free = float(re.search(r"but ([0-9.]+) GB are free", l).group(1))
parts = [float(x) for x in re.search(r"model ([0-9.]+) GB, teacher ([0-9.]+) GB, activation cache ([0-9.]+) GB, optimizer ([0-9.]+) GB", l).groups()]
assert need > free, l
assert abs(sum(parts) - need) <= 0.01 * need + 0.02, l
PY
  [ ! -e "$T/bad" ] || { echo "run directory left behind for $*"; exit 1; }
}
# 4M windows of 64 tokens: the logits alone are 4M * 64 * 512 * 4 bytes = 550 GB
big "QAT" train.batch=4000000
big "QAT" train.batch=4000000 distill.enabled=true
# Block-AP: 10M calibration windows, all of them allowed in the device tier of the cache
big "Block-AP" method=block_ap block_ap.samples=10000000 block_ap.cache_device_mb=100000000
big "E2E-QP" method=pipeline e2e_qp.batch=4000000

# fits: the estimate is logged as one line, the run completes
"$QAT" train "$T/c.yaml" > /dev/null 2> "$T/ok.err" || { cat "$T/ok.err"; exit 1; }
grep -q "memory: QAT [0-9.]* GB (model" "$T/ok.err" || { echo "no memory estimate logged"; cat "$T/ok.err"; exit 1; }
[ -f "$T/run/results.json" ] || { echo "no results"; exit 1; }
# E2E-QP at e2e_qp.seq_len 512 vs 0 (= data.seq_len 64): 8x the tokens per micro-batch, ~8x the
# estimate (activations and logits dominate at batch 128; flash attention keeps them linear in
# T). A training file of a few tokens stops both jobs right after the estimate, naming the length
# the windows need.
printf 'Once upon a time there was a little cat.\n' > "$T/short.txt"
"$QAT" tokenize --tokenizer "$A/stories260K/tok512.bin" --in "$T/short.txt" --docs none \
  --out "$T/short.npy" 2> /dev/null
for s in 0 512; do
  set +e
  "$QAT" train "$T/c.yaml" method=pipeline e2e_qp.batch=128 e2e_qp.seq_len=$s \
    data.train="$T/short.npy" checkpoint.dir="$T/e2e$s" > /dev/null 2> "$T/e2e$s.err"
  rc=$?; set -e
  [ $rc != 0 ] || { echo "expected a failure on the short training file"; exit 1; }
  [ ! -e "$T/e2e$s" ] || { echo "run directory left behind"; exit 1; }
done
grep -q "data.seq_len + 1 = 65 needed" "$T/e2e0.err" || { cat "$T/e2e0.err"; exit 1; }
grep -q "e2e_qp.seq_len + 1 = 513 needed" "$T/e2e512.err" || { cat "$T/e2e512.err"; exit 1; }
python3 - "$T/e2e0.err" "$T/e2e512.err" <<'PY'
import re, sys
def est(path):
    l = next(l for l in open(path) if "memory: Block-AP" in l)
    return [float(x) for x in re.search(r"Block-AP ([0-9.]+) GB.*E2E-QP ([0-9.]+) GB", l).groups()]
(b0, e0), (b1, e1) = est(sys.argv[1]), est(sys.argv[2])
assert b0 == b1, (b0, b1)  # Block-AP stays at data.seq_len
assert e0 > 0.1 and 7.5 < e1 / e0 < 8.5, (e0, e1)
PY
echo "train memcheck: all checks passed"

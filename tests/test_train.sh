#!/usr/bin/env bash
# qat train end to end on stories260K (skipped without the assets):
# - a short QAT run beats RTN on held-out loss and writes results / metrics / checkpoints;
# - SIGKILL after a checkpoint, then the same command again: final state byte-identical to an
#   uninterrupted run; SIGINT saves a checkpoint and stops cleanly;
# - export: a HF folder whose Linear weights lie exactly on the quantization grid; qat eval loads it;
# - bad configs and overrides exit 1 or 2 naming the key and leave no run directory behind.
set -euo pipefail
. "$(dirname "$0")/lib_stories260k.sh"

cat > "$T/c.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 64}
method: qat
quant: {bits: 2, group: 32}
train: {steps: 12, batch: 4, lr: 1e-3, lr_quant: 1e-3, warmup: 2, eval_windows: 6, clip: 1.0}
distill: {enabled: true, alpha: 0.5}
checkpoint: {dir: $T/run, every: 4, keep: 2}
YAML

# 1. uninterrupted run
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/a" > "$T/a.out" 2> "$T/a.err"
python3 - "$T/a" <<'PY'
import json, os, sys
d = sys.argv[1]
r = json.load(open(os.path.join(d, "results.json")))
assert r["qat"]["nll"] < r["rtn"]["nll"] - 0.5, f"QAT did not beat RTN: {r}"
assert r["fp"]["nll"] < r["qat"]["nll"], r
lines = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
assert [l["step"] for l in lines if "loss" in l] == list(range(1, 13)), lines
ck = sorted(x for x in os.listdir(d) if x.startswith("ckpt-"))
assert ck == ["ckpt-00000008", "ckpt-00000012"], ck   # keep: 2
assert os.path.exists(os.path.join(d, "config.yaml"))
print(f"W2g32 12 steps: fp {r['fp']['nll']:.4f} rtn {r['rtn']['nll']:.4f} qat {r['qat']['nll']:.4f}")
PY

# 2. SIGKILL after the first checkpoint, then the same command resumes
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/b" > /dev/null 2>&1 &
pid=$!
for i in $(seq 1 600); do [ -f "$T/b/ckpt-00000004/state.json" ] && break; sleep 0.1; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[ -f "$T/b/ckpt-00000004/state.json" ] || { echo "no checkpoint before kill"; exit 1; }
[ -f "$T/b/ckpt-00000012/state.json" ] && echo "note: run finished before the kill"
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/b" > /dev/null 2> "$T/b.err"
grep -q "resumed from" "$T/b.err" || { echo "did not resume"; cat "$T/b.err"; exit 1; }
cmp "$T/a/ckpt-00000012/state.safetensors" "$T/b/ckpt-00000012/state.safetensors" ||
  { echo "resumed run differs from the uninterrupted one"; exit 1; }

# 2b. activation recomputation changes memory, not results
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/r" train.recompute=true > /dev/null 2>&1
cmp "$T/a/ckpt-00000012/state.safetensors" "$T/r/ckpt-00000012/state.safetensors" ||
  { echo "train.recompute=true changed the trained state"; exit 1; }

# 3. SIGINT: checkpoint and a clean stop, then resume to the end
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/c" checkpoint.every=0 > /dev/null 2> "$T/c.err" &
pid=$!
for i in $(seq 1 600); do grep -q "^train [1-9]" "$T/c.err" 2>/dev/null && break; sleep 0.1; done
kill -INT $pid 2>/dev/null || true # it may have finished already (a fast machine): rc 0 below
set +e; wait $pid; rc=$?; set -e
if [ $rc != 0 ]; then
  grep -q "interrupted" "$T/c.err" || { echo "SIGINT: exit $rc without the interrupted message"; cat "$T/c.err"; exit 1; }
  ls "$T/c" | grep -q "ckpt-" || { echo "SIGINT: no checkpoint saved"; exit 1; }
fi
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/c" checkpoint.every=0 > /dev/null 2>&1
[ -f "$T/c/ckpt-00000012/state.json" ] || { echo "SIGINT run did not finish after resume"; exit 1; }

# 4. export: on the grid, loadable
"$QAT" export --checkpoint "$T/a" --out "$T/exp" > /dev/null
PYTHONPATH=tests/ref python3 - "$T/exp" <<'PY'
import json, os, sys
import numpy as np
import st_np
d = sys.argv[1]
w, _, _ = st_np.read(os.path.join(d, "model.safetensors"))
q, meta, _ = st_np.read(os.path.join(d, "qat_quant.safetensors"))
rec = json.load(open(os.path.join(d, "qat_quant.json")))
bits, g = rec["bits"], rec["group"]
n = 0
for name, a in w.items():
    if not name.endswith("_proj.weight"):
        continue
    pre = name[: -len(".weight")]
    s = np.clip(q[pre + ".scales"], 1e-4, 1e4).astype(np.float32)
    z = np.clip(np.rint(q[pre + ".zeros"]), 0, 2 ** bits - 1)
    s = np.repeat(s, g, axis=1)[:, : a.shape[1]]
    z = np.repeat(z, g, axis=1)[:, : a.shape[1]]
    code = a / s + z
    assert np.abs(code - np.rint(code)).max() < 1e-3, name + ": off the grid"
    assert code.min() > -1e-3 and code.max() < 2 ** bits - 1 + 1e-3, name
    n += 1
assert n == 35, n
PY
"$QAT" eval --model "$T/exp" --data "$T/val.npy" --seq-len 64 --max-windows 6 --json > "$T/e.json"
python3 - "$T/e.json" "$T/a/results.json" <<'PY'
import json, sys
e, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert abs(e["nll"] - r["qat"]["nll"]) < 1e-4, (e, r["qat"])
PY

# 4b. portable run directories: a run started with relative paths from one directory exports
# (and would resume) from any other; config.yaml records absolute paths
mkdir -p "$T/rel"
(cd "$T" && "$QAT" train "$T/c.yaml" model=m data.train=train.npy data.val=val.npy \
  checkpoint.dir=rel/run train.steps=2 checkpoint.every=0 > /dev/null 2>&1)
grep -q "^model: \"$T/m\"\$" "$T/rel/run/config.yaml" ||
  { echo "config.yaml keeps a relative model path:"; grep model "$T/rel/run/config.yaml"; exit 1; }
(cd / && "$QAT" export --checkpoint "$T/rel/run" --out "$T/rel/exp" > /dev/null) ||
  { echo "export from another working directory failed"; exit 1; }

# 5. bad configs: exit 1 or 2, the key named, no run directory
bad() { # expected-code pattern args...
  local code=$1 pat=$2; shift 2
  set +e; "$QAT" train "$@" > /dev/null 2> "$T/err"; rc=$?; set -e
  [ $rc = "$code" ] || { echo "expected exit $code for $*, got $rc"; cat "$T/err"; exit 1; }
  grep -q -- "$pat" "$T/err" || { echo "error for $* does not name $pat:"; cat "$T/err"; exit 1; }
  [ ! -e "$T/bad" ] || { echo "run directory left behind for $*"; exit 1; }
}
sed 's/bits: 2/bitz: 2/' "$T/c.yaml" > "$T/typo.yaml"
bad 2 "quant.bitz" "$T/typo.yaml" checkpoint.dir="$T/bad"
bad 2 "train.steps" "$T/c.yaml" checkpoint.dir="$T/bad" train.steps=ten
bad 2 "quant.bits" "$T/c.yaml" checkpoint.dir="$T/bad" quant.bits=9
bad 2 "train.nope" "$T/c.yaml" checkpoint.dir="$T/bad" train.nope=1
bad 2 "model" "$T/c.yaml" checkpoint.dir="$T/bad" model="$T/missing"
bad 2 "data.train" "$T/c.yaml" checkpoint.dir="$T/bad" data.train="$T/missing.npy"
echo "train: all checks passed"

#!/usr/bin/env bash
# E2E-QP with packed frozen codes (e2e_qp.packed: true; qat_llama_pack_frozen, qgemm, qgemm_ds)
# against the U8 path on stories260K (skipped without the assets):
# - method e2e_qp (RTN codes) W2 g4 asym (also with distillation) and W3 per-channel sym, and
#   method pipeline (Block-AP then E2E-QP, the codes frozen by Block-AP): every checkpoint's state (step sizes, their AdamW
#   moments, the dequantized weights, zero points, codes) and every logged loss are BIT-IDENTICAL
#   to the U8 run's, and so is the held-out loss. Why exact: every stories260K Linear fits one
#   4 MB panel and the batches have M = 256 > 16 tokens, so qgemm dequantizes the whole Linear
#   with dq_forward's arithmetic and calls the same cblas_sgemm as the dense path (forward and
#   dx), and qgemm_ds forms dW with the same sgemm and reduces it as dq_backward does;
# - the packed path is really taken: with the small-M decode-and-dot kernels forced
#   (QAT_QGEMM_SMALL_M), the losses move (other summation order) but stay within 1e-4 relative;
#   the log reports the packed bytes, 2 bits per weight + zero points;
# - checkpoints stay in the U8 format: a packed run resumed from its step-4 checkpoint ends
#   byte-identical to the uninterrupted one, and a U8 checkpoint resumes packed (and back);
# - refused at the start (exit 2, the key named, no run directory): device cuda, per-tensor
#   scales, and a group that does not divide a Linear's input width (172 here).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
. "$(dirname "$0")/lib_stories260k.sh"

cat > "$T/c.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 64}
method: e2e_qp
quant: {bits: 2, group: 4}
train: {batch: 4, eval_windows: 8, seed: 3}
block_ap: {samples: 8, epochs: 1, batch: 2, lr_w: 1e-3, lr_quant: 1e-3, val_samples: 2}
e2e_qp: {steps: 8, batch: 4, grad_accum: 2, lr: 1e-3, clip: 0.3, warmup_ratio: 0.1}
checkpoint: {dir: $T/run, every: 4, keep: 3}
YAML

run() { # dir args...
  local d=$1; shift
  "$QAT" train "$T/c.yaml" checkpoint.dir="$T/$d" "$@" > /dev/null 2> "$T/$d.err" ||
    { cat "$T/$d.err"; exit 1; }
}
same() { # dirA dirB: identical checkpoints (every one in A), losses and results
  python3 - "$T/$1" "$T/$2" <<'PY'
import json, os, sys
a, b = sys.argv[1], sys.argv[2]
cks = sorted(x for x in os.listdir(a) if x.startswith("ckpt-"))
assert cks and cks == sorted(x for x in os.listdir(b) if x.startswith("ckpt-")), (a, b)
for ck in cks:
    for f in ("state.safetensors", "state.json"):
        pa, pb = os.path.join(a, ck, f), os.path.join(b, ck, f)
        if f == "state.json":
            def nohash(o):  # the config hash differs (e2e_qp.packed is in the config)
                if isinstance(o, dict): return {k: nohash(v) for k, v in o.items() if k != "config_hash"}
                return [nohash(v) for v in o] if isinstance(o, list) else o
            assert nohash(json.load(open(pa))) == nohash(json.load(open(pb))), (ck, f)
        else:
            assert open(pa, "rb").read() == open(pb, "rb").read(), (ck, f)
la = [json.loads(l)["loss"] for l in open(os.path.join(a, "metrics.jsonl")) if '"loss"' in l]
lb = [json.loads(l)["loss"] for l in open(os.path.join(b, "metrics.jsonl")) if '"loss"' in l]
assert la and la == lb, (la, lb)
ra, rb = json.load(open(os.path.join(a, "results.json"))), json.load(open(os.path.join(b, "results.json")))
assert ra["qat"] == rb["qat"], (ra["qat"], rb["qat"])
print("%s == %s: %d checkpoints, %d losses, held-out nll %.6f" % (os.path.basename(a), os.path.basename(b), len(cks), len(la), ra["qat"]["nll"]))
PY
}

# 1. W2 g4 asym, method e2e_qp: U8 vs packed
run u8
run pk e2e_qp.packed=true
grep -q "e2e_qp: frozen codes packed" "$T/pk.err" || { echo "packed run did not pack"; cat "$T/pk.err"; exit 1; }
! grep -q "frozen codes packed" "$T/u8.err" || { echo "the default packed the codes"; exit 1; }
# 5 layers of q [64, 64], k, v [32, 64], o [64, 64], gate, up [172, 64], down [64, 172] at 2
# bits, rows in whole 32-bit words (64 or 172 codes: 4 or 11 words), zero points 16 or 43 per
# row (1 or 3 words), 8 slack bytes per buffer
python3 - "$T/pk.err" <<'PY'
import re, sys
mb = float(re.search(r"frozen codes packed: ([0-9.]+) MB", open(sys.argv[1]).read()).group(1))
rows = [(64, 64), (32, 64), (32, 64), (64, 64), (172, 64), (172, 64), (64, 172)]  # (N, K)
w = lambda n: (n * 2 + 31) // 32 * 4
need = 5 * sum(N * w(K) + 8 + N * w(K // 4) + 8 for N, K in rows)
assert abs(mb - need / 1e6) < 0.0005, (mb, need)
PY
same u8 pk

# 1b. with distillation (a full-precision teacher beside the packed student)
run u8d distill.enabled=true
run pkd distill.enabled=true e2e_qp.packed=true
same u8d pkd

# 2. the packed kernels are live: the small-M decode-and-dot path gives other roundings
QAT_QGEMM_SMALL_M=1000000 run pks e2e_qp.packed=true
python3 - "$T/pk" "$T/pks" <<'PY'
import json, os, sys
l = [[json.loads(x)["loss"] for x in open(os.path.join(d, "metrics.jsonl")) if '"loss"' in x] for d in sys.argv[1:]]
assert l[0] != l[1], "forcing the small-M qgemm kernels changed nothing: is qgemm used?"
assert all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(*l)), l
PY

# 3. resume: packed from its own step-4 checkpoint; U8 checkpoint -> packed run; packed -> U8
cp -r "$T/pk" "$T/pr" && rm -rf "$T/pr/ckpt-00000008"
run pr e2e_qp.packed=true
grep -q "resumed from .*E2E-QP step 4" "$T/pr.err" || { echo "did not resume"; cat "$T/pr.err"; exit 1; }
cmp "$T/pk/ckpt-00000008/state.safetensors" "$T/pr/ckpt-00000008/state.safetensors"
cp -r "$T/u8" "$T/ur" && rm -rf "$T/ur/ckpt-00000008"
run ur e2e_qp.packed=true
cmp "$T/u8/ckpt-00000008/state.safetensors" "$T/ur/ckpt-00000008/state.safetensors"
cp -r "$T/pk" "$T/pu" && rm -rf "$T/pu/ckpt-00000008"
run pu
cmp "$T/pk/ckpt-00000008/state.safetensors" "$T/pu/ckpt-00000008/state.safetensors"

# 4. W3 per-channel symmetric
run u8c quant.bits=3 quant.group=-1 quant.sym=true
run pkc quant.bits=3 quant.group=-1 quant.sym=true e2e_qp.packed=true
same u8c pkc

# 5. pipeline: Block-AP freezes the codes, E2E-QP packs them
run u8p method=pipeline
run pkp method=pipeline e2e_qp.packed=true
same u8p pkp

# 6. refusals at the start
bad() { # pattern args...
  local pat=$1; shift
  set +e; "$QAT" train "$T/c.yaml" checkpoint.dir="$T/bad" "$@" > /dev/null 2> "$T/err"; rc=$?; set -e
  [ $rc = 2 ] || { echo "expected exit 2 for $*, got $rc"; cat "$T/err"; exit 1; }
  grep -q -- "$pat" "$T/err" || { echo "error for $* does not name $pat:"; cat "$T/err"; exit 1; }
  [ ! -e "$T/bad" ] || { echo "run directory left behind for $*"; exit 1; }
}
bad "e2e_qp.packed" e2e_qp.packed=true device=cuda
bad "e2e_qp.packed" e2e_qp.packed=true quant.group=0
bad "e2e_qp.packed: quant.group 32 does not divide the model's Linear input width 172" \
  e2e_qp.packed=true quant.group=32
bad "e2e_qp.packed" e2e_qp.packed=maybe
echo "e2e_packed: all checks passed"

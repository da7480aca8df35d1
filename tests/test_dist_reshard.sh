#!/usr/bin/env bash
# Resuming on another world size (issue 12 item 3) under mpirun, stories260K on the CPU (skipped
# without mpirun, an MPI build or the assets). train.global_batch 24 with micro-batches of 4:
# a step takes the same 24 windows on 1, 2 or 3 ranks (accumulation 6, 3, 2), so a checkpoint
# saved on 2 ranks resumes on 3 or on 1:
# 1. ZeRO-1 (dist.zero 1): the moments are resharded on resume (each rank reads its flat range
#    from the saved optim-rank*.safetensors, train/zero_ckpt.h); resuming ckpt 8 of a 2-rank run
#    on 3 ranks and on 1 ends at the uninterrupted 2-rank run's ckpt 12 within the tolerance of
#    3-rank agreement (weights 1e-5, moments 1e-3, normalized by each tensor's largest value:
#    only the order of the gradient sums differs), checked in each layout's own flat order;
# 2. whole moments (dist.zero 0): the same resume on 3 ranks, same tolerance;
# 3. a different world whose step takes other windows (no global_batch) is still refused on
#    every rank with both world sizes and both window counts.
set -euo pipefail
. "$(dirname "$0")/lib_dist.sh"
. "$(dirname "$0")/lib_stories260k.sh"

cat > "$T/c.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 32}
method: qat
quant: {bits: 2, group: 32}
train: {steps: 12, batch: 4, global_batch: 24, lr: 1e-3, lr_quant: 1e-3, warmup: 2, eval_windows: 4, clip: 1.0}
checkpoint: {dir: $T/run, every: 4, keep: 3}
dist: {bucket_mb: 0.05}
YAML
cat > "$T/zcmp.py" <<'PY'
# zcmp.py A B WHAT TOL: the parameters and moments of two checkpoints of either layout
# (zero:0: optim.m.<name> per tensor; zero:1: flat [shard] per rank in optim-rank*.safetensors,
# cut into tensors in state.json's zero_params order, the padding checked to be zero)
import json, os, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], np.float32)
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
def ckpt(d):
    t = load(os.path.join(d, "state.safetensors"))
    f = json.load(open(os.path.join(d, "state.json")))["fields"]
    if "zero" not in f:
        return t, 0
    names = f["zero_params"]["str"].split(",")
    W, S, N = (int(f[k]["int"]) for k in ("world", "zero_shard", "zero_flat"))
    assert S == -(-N // W), (N, W, S)
    sh = [load(os.path.join(d, "optim-rank%05d.safetensors" % r)) for r in range(W)]
    assert not os.path.exists(os.path.join(d, "optim-rank%05d.safetensors" % W))
    for k in ("m", "v"):
        flat = np.concatenate([s["optim." + k] for s in sh])
        assert flat.size == W * S
        off = 0
        for nm in names:
            n = t[nm].size
            t["optim.%s.%s" % (k, nm)] = flat[off:off + n]
            off += n
        assert off == N and not flat[N:].any(), "layout or padding wrong"
    return t, W
(a, wa), (b, wb) = ckpt(sys.argv[1]), ckpt(sys.argv[2])
assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
def worst(opt):
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-30))
               for k in a if k.startswith("optim") == opt)
w, m = worst(False), worst(True)
tol = float(sys.argv[4])
lay = lambda W: f"moments in {W} shard files" if W else "whole moments"
print(f"{sys.argv[3]}: {lay(wa)} vs {lay(wb)}: weights {w:.3g}, moments {m:.3g} "
      f"(normalized; tolerance {tol:g} / {100 * tol:g})")
assert w < tol and m < 100 * tol, f"{sys.argv[3]}: beyond tolerance"
PY
last=ckpt-00000012
run() { # ranks, dir, overrides...
  local np=$1 d=$2; shift 2
  dist_mpirun -np "$np" "$QAT" train "$T/c.yaml" checkpoint.dir="$d" "$@" > /dev/null 2> "$d.err" ||
    { cat "$d.err"; echo "FAIL: $np ranks into $d"; exit 1; }
}
resume() { # name, from, ranks, overrides...: ckpt 8 of run `from` resumed on `ranks`
  local n=$1 from=$2 np=$3; shift 3
  cp -r "$T/$from" "$T/$n" && rm -rf "$T/$n/$last"
  run "$np" "$T/$n" "$@"
  grep -q "resuming $T/$n/ckpt-00000008, saved on 2 ranks, on $np" "$T/$n.err" &&
    grep -q "resumed from $T/$n/ckpt-00000008" "$T/$n.err" ||
    { cat "$T/$n.err"; echo "FAIL: $n did not resume ckpt 8 of 2 ranks on $np"; exit 1; }
  python3 "$T/zcmp.py" "$T/$from/$last" "$T/$n/$last" "$n: 2 ranks, resumed on $np at step 8" 1e-5
}

# 1. ZeRO-1: saved on 2 ranks, resumed on 3 and on 1
run 2 "$T/z" dist.zero=1
resume z3 z 3 dist.zero=1
[ -f "$T/z3/$last/optim-rank00002.safetensors" ] || { echo "FAIL: no third shard after resharding"; exit 1; }
resume z1 z 1 dist.zero=1
# 2. whole moments: saved on 2, resumed on 3
run 2 "$T/f"
resume f3 f 3

# 3. another world with other windows per step: refused on every rank, both numbers named
set +e
dist_mpirun -np 3 "$QAT" train "$T/c.yaml" checkpoint.dir="$T/z" train.global_batch=0 dist.zero=1 train.steps=16 > /dev/null 2> "$T/bad.err"
rc=$?
set -e
want="saved by a run of 2 ranks but this job has 3: resume it on 2, or with the same windows per step (world x batch x accumulation: 24 saved, 12 here"
n=$(grep -c "qat train: error: .*$want" "$T/bad.err" || true)
[ $rc -ne 0 ] && [ "$n" = 3 ] || { cat "$T/bad.err"; echo "FAIL: other windows per step: rc $rc, $n of 3 ranks refused"; exit 1; }
[ ! -e "$T/z/ckpt-00000016" ] || { echo "FAIL: a refused resume wrote a checkpoint"; exit 1; }
echo "other windows per step refused on 3 of 3 ranks"

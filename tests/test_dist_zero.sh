#!/usr/bin/env bash
# ZeRO-1 (dist.zero = 1: AdamW moments sharded across ranks, train/zero.h) under mpirun,
# stories260K on the CPU (skipped without mpirun, an MPI build or the assets):
# 1. 1 process with zero:1 equals zero:0 bit for bit (weights, and the moments reassembled from
#    the shard file in state.json's zero_params order: the documented layout);
# 2. method qat, 2 ranks zero:1 vs 2 ranks zero:0 (== 1 process x accumulation 2): the weights
#    within 1e-5 and the moments within 1e-3 (normalized by each tensor's largest value). Not
#    bitwise: zero:0 sums dL/dw_hat across ranks before the fake-quant backward, zero:1 sums the
#    parameters' gradients after it (the reduce-scatter), and the quantizer gradients of a sum
#    round differently from the sum of the ranks' own; from step 1 the states drift by ulps;
#    3 ranks (the last shard padded) likewise against 3 ranks zero:0; 0.1 MiB buckets give the
#    one-bucket result bit for bit;
# 3. method e2e_qp (step sizes accumulate directly, no backward after the sum): 2 ranks zero:1
#    == zero:0 bit for bit;
# 4. each rank's moments are 1/W of zero:0's (the padded shard: 8 x ceil(N / 2) bytes) in the
#    optimizer line, and the memory estimate says 1/2;
# 5. a checkpoint holds optim-rank00000/1.safetensors; resuming from ckpt 8 ends with the
#    uninterrupted run's ckpt 12 files byte for byte;
# 6. resuming a zero:1 checkpoint on 3 ranks, or with dist.zero = 0, is refused on every rank
#    with one line naming both values.
set -euo pipefail
. "$(dirname "$0")/lib_dist.sh"
. "$(dirname "$0")/lib_stories260k.sh"

cat > "$T/c.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 64}
method: qat
quant: {bits: 2, group: 32}
train: {steps: 12, batch: 4, lr: 1e-3, lr_quant: 1e-3, warmup: 2, eval_windows: 4, clip: 1.0}
distill: {enabled: true, alpha: 0.5}
checkpoint: {dir: $T/run, every: 4, keep: 3}
YAML
cat > "$T/zcmp.py" <<'PY'
# zcmp.py A B WHAT [TOL]: the parameters and moments of two checkpoints of either layout
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
        return t
    names = f["zero_params"]["str"].split(",")
    W, S, N = (int(f[k]["int"]) for k in ("world", "zero_shard", "zero_flat"))
    assert S == -(-N // W), (N, W, S)
    sh = [load(os.path.join(d, "optim-rank%05d.safetensors" % r)) for r in range(W)]
    for k in ("m", "v"):
        flat = np.concatenate([s["optim." + k] for s in sh])
        assert flat.size == W * S
        off = 0
        for nm in names:
            n = t[nm].size
            t["optim.%s.%s" % (k, nm)] = flat[off:off + n]
            off += n
        assert off == N and not flat[N:].any(), "layout or padding wrong"
    return t
a, b = ckpt(sys.argv[1]), ckpt(sys.argv[2])
assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
same = all(np.array_equal(a[k], b[k]) for k in a)
def worst(opt):
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-30))
               for k in a if k.startswith("optim") == opt)
w, m = worst(False), worst(True)
tol = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
print(f"{sys.argv[3]}: {'identical' if same else 'differ'}; weights {w:.3g}, moments {m:.3g} (normalized)")
assert same if tol == 0 else (w < tol and m < 100 * tol), f"{sys.argv[3]}: beyond tolerance"
PY
run2() { dist_mpirun -np 2 "$QAT" train "$T/c.yaml" "$@"; }
last=ckpt-00000012

# 1. one process: zero:1 == zero:0, bit for bit (accumulation 2: the global batch of 2 ranks)
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/one" train.grad_accum=2 > /dev/null 2> "$T/one.err"
"$QAT" train "$T/c.yaml" checkpoint.dir="$T/one1" train.grad_accum=2 dist.zero=1 > /dev/null 2> "$T/one1.err" ||
  { cat "$T/one1.err"; echo "FAIL: 1 process, dist.zero = 1"; exit 1; }
python3 "$T/zcmp.py" "$T/one/$last" "$T/one1/$last" "1 process, zero:1 vs zero:0"

# 2. two ranks: zero:1 vs zero:0 (and zero:0 == 1 process, test_dist_train.sh's identity)
run2 checkpoint.dir="$T/z0" > /dev/null 2> "$T/z0.err" || { cat "$T/z0.err"; echo "FAIL: 2 ranks zero:0"; exit 1; }
run2 checkpoint.dir="$T/z1" dist.zero=1 > "$T/z1.out" 2> "$T/z1.err" ||
  { cat "$T/z1.err"; echo "FAIL: 2 ranks zero:1"; exit 1; }
python3 "$T/zcmp.py" "$T/one/$last" "$T/z0/$last" "2 ranks zero:0 vs 1 process"
python3 "$T/zcmp.py" "$T/z0/$last" "$T/z1/$last" "2 ranks zero:1 vs zero:0" 1e-5
[ "$(grep -c '^recovered' "$T/z1.out")" = 1 ] || { cat "$T/z1.out"; echo "FAIL: not one results table"; exit 1; }
for r in 0 1; do
  [ -f "$T/z1/$last/optim-rank0000$r.safetensors" ] || { ls "$T/z1/$last"; echo "FAIL: no shard of rank $r"; exit 1; }
done
if grep -q '"optim\.' "$T/z1/$last/state.json" || python3 -c "
import json,struct,sys; b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]
sys.exit(0 if any(k.startswith('optim') for k in json.loads(b[8:8+n])) else 1)" "$T/z1/$last/state.safetensors"; then
  echo "FAIL: rank 0's state.safetensors still holds moments"; exit 1
fi

# 2a. in buckets of 0.1 MiB per rank (5 reduce-scatters and all-gathers per step instead of 1):
# the same elementwise sums, bit for bit
run2 checkpoint.dir="$T/zb" dist.zero=1 dist.zero_bucket_mb=0.1 > /dev/null 2> "$T/zb.err" ||
  { cat "$T/zb.err"; echo "FAIL: 2 ranks zero:1 in buckets"; exit 1; }
grep -q "(26214 elements per rank)" "$T/zb.err" || { grep optimizer "$T/zb.err"; echo "FAIL: bucket size"; exit 1; }
python3 "$T/zcmp.py" "$T/z1/$last" "$T/zb/$last" "2 ranks zero:1, 0.1 MiB buckets vs one bucket"

# 2b. three ranks (a padded shard: N is not a multiple of 3; 4 buckets, the last one short and
# padded) against 3 ranks with zero:0
dist_mpirun -np 3 "$QAT" train "$T/c.yaml" checkpoint.dir="$T/t0" train.global_batch=12 > /dev/null 2>&1
dist_mpirun -np 3 "$QAT" train "$T/c.yaml" checkpoint.dir="$T/t1" train.global_batch=12 dist.zero=1 \
  dist.zero_bucket_mb=0.1 > /dev/null 2> "$T/t1.err" ||
  { cat "$T/t1.err"; echo "FAIL: 3 ranks zero:1"; exit 1; }
python3 "$T/zcmp.py" "$T/t0/$last" "$T/t1/$last" "3 ranks zero:1 vs zero:0" 1e-5

# 3. e2e_qp: the same sum in the same order, bit for bit
e2e="method=e2e_qp e2e_qp.steps=4 e2e_qp.batch=4 e2e_qp.lr=1e-3"
run2 checkpoint.dir="$T/e0" $e2e > /dev/null 2> "$T/e0.err" || { cat "$T/e0.err"; echo "FAIL: e2e_qp zero:0"; exit 1; }
run2 checkpoint.dir="$T/e1" $e2e dist.zero=1 > /dev/null 2> "$T/e1.err" || { cat "$T/e1.err"; echo "FAIL: e2e_qp zero:1"; exit 1; }
ck=$(cd "$T/e0" && ls -d ckpt-* | tail -1)
python3 "$T/zcmp.py" "$T/e0/$ck" "$T/e1/$ck" "e2e_qp: 2 ranks zero:1 vs zero:0"

# 4. the moment bytes per rank: one padded shard of the flat N parameters
python3 - "$T/one.err" "$T/z1.err" "$T/e0.err" "$T/e1.err" <<'PY'
import re, sys
def grab(p, pat):
    m = re.search(pat, open(p).read()); assert m, (p, pat); return m
for full, zero in ((sys.argv[1], sys.argv[2]), (sys.argv[3], sys.argv[4])):
    b0 = int(grab(full, r"optimizer: (\d+) bytes of moments on this rank").group(1))
    m = grab(zero, r"optimizer: ZeRO-1, (\d+) parameters in 2 shards of (\d+): (\d+) bytes of moments")
    N, S, b1 = map(int, m.groups())
    assert b0 == 8 * N and S == -(-N // 2) and b1 == 8 * S, (b0, N, S, b1)
    assert 0 <= 2 * b1 - b0 < 8 * 2, (b0, b1)
    grab(zero, r"memory: .*optimizer [0-9.]+ \(1/2: ZeRO-1\), ZeRO-1 buffers")
    print(f"moments per rank: {b1} bytes with zero:1 on 2 ranks, {b0} with zero:0 ({b0 / b1:.4f}x)")
PY

# 5. resume from a zero:1 checkpoint == the uninterrupted run
cp -r "$T/z1" "$T/res" && rm -rf "$T/res/$last"
run2 checkpoint.dir="$T/res" dist.zero=1 > /dev/null 2> "$T/res.err" || { cat "$T/res.err"; echo "FAIL: zero:1 resume"; exit 1; }
grep -q "resumed from $T/res/ckpt-00000008" "$T/res.err" || { cat "$T/res.err"; echo "FAIL: did not resume from ckpt 8"; exit 1; }
for f in state.safetensors optim-rank00000.safetensors optim-rank00001.safetensors; do
  cmp "$T/z1/$last/$f" "$T/res/$last/$f" || { echo "FAIL: resumed $f differs from the uninterrupted run"; exit 1; }
done
echo "resume from ckpt 8 with zero:1: ckpt 12 identical to the uninterrupted run"

# 6. a different world size, or dist.zero, on resume: refused on every rank with one line
bad() { # name, expected text, ranks, overrides...
  local name=$1 want=$2 np=$3; shift 3
  set +e; dist_mpirun -np "$np" "$QAT" train "$T/c.yaml" checkpoint.dir="$T/z1" train.steps=16 "$@" > /dev/null 2> "$T/bad.err"
  local rc=$?; set -e
  [ $rc -ne 0 ] || { echo "FAIL: $name exited 0"; exit 1; }
  local n; n=$(grep -c "qat train: error: .*$want" "$T/bad.err" || true)
  [ "$n" = "$np" ] || { cat "$T/bad.err"; echo "FAIL: $name: $n of $np ranks reported '$want'"; exit 1; }
  echo "$name: rc $rc: $(grep -m1 'qat train: error' "$T/bad.err" | cut -c1-160)"
}
bad "world size on resume" "saved by a run of 2 ranks but this job has 3" 3 dist.zero=1
bad "dist.zero on resume" "saved with dist.zero = 1 but this job has dist.zero = 0" 2
[ ! -e "$T/z1/ckpt-00000016" ] || { echo "FAIL: a refused resume wrote a checkpoint"; exit 1; }
echo "all ZeRO-1 checks passed"

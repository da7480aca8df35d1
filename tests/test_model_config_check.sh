#!/usr/bin/env bash
# config.json checked against the weights before anything sized from it is allocated (issue 13,
# item 1), on the stories260K folder convert writes (skipped without the assets):
# - hand edits (hidden_size 12288 with 40 layers, intermediate_size x10, vocab_size x100,
#   num_hidden_layers +1 / -1, num_key_value_heads, head_dim, tie_word_embeddings false without
#   lm_head.weight), hidden_act with a "\n", a tensor stored as I32 and a shard index naming a
#   missing file each make qat eval exit 1 with ONE line naming config.json (or the index), the
#   key and the tensor;
# - the refusal's peak RSS (getrusage of the child) stays within 4 MB of a run that fails before
#   opening any model (a missing folder), while the 12288/40 edit implies 73.5 GB of F32 masters;
# - generate, quantize --method gptq, train and export refuse the 12288/40 edit the same way and
#   leave no output folder; the unedited folder still evaluates.
set -euo pipefail
. "$(dirname "$0")/lib_stories260k.sh"
python3 -c 'import json, resource' 2>/dev/null || { echo "skipped: python3 not found"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

# rss.py OUT_PREFIX CMD...: runs CMD, writes its stderr to OUT_PREFIX.err, its peak RSS (KB) to
# OUT_PREFIX.rss, and exits with its status.
cat > "$T/rss.py" <<'PY'
import resource, subprocess, sys
pre = sys.argv[1]
with open(pre + ".err", "wb") as err:
    rc = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err)
open(pre + ".rss", "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
PY
# edit.py SRC DST KEY=JSON...: config.json with keys set (JSON null deletes the key)
cat > "$T/edit.py" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    v = json.loads(v)
    if v is None: c.pop(k, None)
    else: c[k] = v
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
# bytes.py DIR: the bytes of parameters config.json implies (F32 masters), for the report
cat > "$T/bytes.py" <<'PY'
import json, sys
c = json.load(open(sys.argv[1] + "/config.json"))
C, F, L, V, H = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"], c["num_attention_heads"]
Hkv = c.get("num_key_value_heads", H); D = c.get("head_dim", C // H)
n = V * C * (1 if c.get("tie_word_embeddings") else 2) + C + L * (2 * C + 2 * H * D * C + 2 * Hkv * D * C + 3 * F * C)
print(4 * n)
PY

M=$T/m
cfg() { cat "$M/config.json"; }
V=$(python3 -c "import json; print(json.load(open('$M/config.json'))['vocab_size'])")
F=$(python3 -c "import json; print(json.load(open('$M/config.json'))['intermediate_size'])")
L=$(python3 -c "import json; print(json.load(open('$M/config.json'))['num_hidden_layers'])")
KV=$(python3 -c "import json; print(json.load(open('$M/config.json'))['num_key_value_heads'])")
python3 -c "import json,sys; assert json.load(open('$M/config.json'))['tie_word_embeddings']" ||
  fail "stories260K is expected to be tied"

# the baseline: a run that fails before any model folder is read
set +e
python3 "$T/rss.py" "$T/base" "$QAT" eval --model "$T/absent" --data "$T/val.npy"
set -e
BASE=$(cat "$T/base.rss")
python3 "$T/rss.py" "$T/ok" "$QAT" eval --model "$M" --data "$T/val.npy" --max-windows 1 ||
  { cat "$T/ok.err"; fail "the unedited folder does not evaluate"; }

n=0
# expect NAME DIR NEEDLE...: qat eval on DIR exits 1, one line, every needle in it, small RSS
expect() {
  local name=$1 dir=$2 rc=0
  shift 2
  python3 "$T/rss.py" "$T/$name" "$QAT" eval --model "$dir" --data "$T/val.npy" --max-windows 1 ||
    rc=$?
  [ $rc = 1 ] || { cat "$T/$name.err"; fail "$name: exit $rc, expected 1"; }
  [ "$(wc -l < "$T/$name.err")" = 1 ] || { cat "$T/$name.err"; fail "$name: not one line"; }
  for needle in "$@"; do
    grep -qF -- "$needle" "$T/$name.err" || { cat "$T/$name.err"; fail "$name: no \"$needle\""; }
  done
  local rss implied
  rss=$(cat "$T/$name.rss")
  [ "$rss" -le $((BASE + 4096)) ] || fail "$name: peak RSS $rss KB, baseline $BASE KB"
  implied=$(python3 "$T/bytes.py" "$dir" 2>/dev/null || echo 0)
  printf '%-12s rss %6d KB (baseline %d KB; config.json implies %.3g GB): %s\n' "$name" "$rss" \
    "$BASE" "$(python3 -c "print($implied / 1e9)")" "$(cut -c1-150 "$T/$name.err")"
  n=$((n + 1))
}
# edited NAME KEY=JSON...: a copy of the folder with config.json edited
edited() {
  local d=$T/$1
  shift
  rm -rf "$d"
  cp -r "$M" "$d"
  python3 "$T/edit.py" "$M/config.json" "$d/config.json" "$@"
  echo "$d"
}

expect big "$(edited big hidden_size=12288 num_hidden_layers=40)" config.json hidden_size \
  model.embed_tokens.weight "[512, 12288]"
expect ffn "$(edited ffn intermediate_size=$((F * 10)))" config.json intermediate_size \
  model.layers.0.mlp.gate_proj.weight
expect vocab "$(edited vocab vocab_size=$((V * 100)))" config.json vocab_size \
  model.embed_tokens.weight
expect layers+1 "$(edited layers+1 num_hidden_layers=$((L + 1)))" config.json num_hidden_layers \
  "model.layers.$L.input_layernorm.weight" missing
expect layers-1 "$(edited layers-1 num_hidden_layers=$((L - 1)))" config.json num_hidden_layers \
  "model.layers.$((L - 1)).input_layernorm.weight"
expect kvheads "$(edited kvheads num_key_value_heads=$((KV / 2)))" config.json \
  num_key_value_heads model.layers.0.self_attn.k_proj.weight
expect headdim "$(edited headdim head_dim=16)" config.json head_dim \
  model.layers.0.self_attn.q_proj.weight
expect untied "$(edited untied tie_word_embeddings=false)" config.json tie_word_embeddings \
  lm_head.weight missing

# a string value with a control byte (a JSON "\n") is echoed on one line
expect newline "$(edited newline 'hidden_act="si\nlu"')" config.json hidden_act

# a tensor stored as I32 (same byte size, so the file itself stays valid)
d=$(edited i32)
python3 - "$d/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
assert h["model.norm.weight"]["dtype"] == "F32"
h["model.norm.weight"]["dtype"] = "I32"
s = json.dumps(h, separators=(",", ":")).encode()
assert len(s) <= n
b[8:8 + n] = s + b" " * (n - len(s))
open(p, "wb").write(bytes(b))
PY
expect i32 "$d" config.json model.norm.weight I32

# a shard index naming a file that is not there
d=$(edited shards)
mv "$d/model.safetensors" "$d/model-00001-of-00002.safetensors"
python3 - "$d" <<'PY'
import json, struct, sys
d = sys.argv[1]
b = open(d + "/model-00001-of-00002.safetensors", "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
wm = {k: "model-00001-of-00002.safetensors" for k in h if k != "__metadata__"}
wm["model.norm.weight"] = "model-00002-of-00002.safetensors"
json.dump({"metadata": {}, "weight_map": wm}, open(d + "/model.safetensors.index.json", "w"))
PY
expect shards "$d" model.safetensors.index.json model.norm.weight model-00002-of-00002.safetensors

# the other loaders refuse the same edit, one line, nothing written
B=$T/big
other() { # NAME OUT CMD...: exit 1, one line naming hidden_size and the tensor, no OUT
  local name=$1 out=$2 rc=0
  shift 2
  "$@" > /dev/null 2> "$T/$name.err" || rc=$?
  [ $rc = 1 ] || { cat "$T/$name.err"; fail "$name: exit $rc, expected 1"; }
  # one error line, the last (qat train prints its effective config first)
  [ "$(grep -c "error" "$T/$name.err")" = 1 ] && tail -n 1 "$T/$name.err" | grep -q "error" ||
    { cat "$T/$name.err"; fail "$name: not one error line"; }
  grep -q "config.json: hidden_size = 12288 .*model.embed_tokens.weight" "$T/$name.err" ||
    { cat "$T/$name.err"; fail "$name: message"; }
  [ -z "$out" ] || [ ! -e "$out" ] || fail "$name: $out was written"
  n=$((n + 1))
}
other generate "" "$QAT" generate --model "$B" --steps 4 --temperature 0
other gptq "$T/g" "$QAT" quantize --method gptq --bits 4 --group 32 --model "$B" \
  --calib "$T/train.npy" --samples 4 --seq-len 32 --device cpu --out "$T/g"
cat > "$T/c.yaml" <<YAML
model: $B
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 32}
method: qat
quant: {bits: 4, group: 32}
train: {steps: 2, batch: 2, lr: 1e-3, eval_windows: 2}
checkpoint: {dir: $T/run}
YAML
other train "$T/run" "$QAT" train "$T/c.yaml"
# export: a run trained on a good copy, whose config.json is edited afterwards
cp -r "$M" "$T/mx"
sed "s|model: $B|model: $T/mx|" "$T/c.yaml" > "$T/cx.yaml"
"$QAT" train "$T/cx.yaml" > /dev/null 2>&1 || fail "training on the unedited copy"
python3 "$T/edit.py" "$M/config.json" "$T/mx/config.json" hidden_size=12288 num_hidden_layers=40
other export "$T/exp" "$QAT" export --checkpoint "$T/run" --out "$T/exp"
echo "config check: $n refusals as expected"

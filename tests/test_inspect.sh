#!/usr/bin/env bash
# qat inspect end to end: safetensors files and model folders built here with Python's struct and
# json only (an independent writer), totals compared with Python's own arithmetic, and malformed
# inputs that must give exit code 1 and exactly one line on stderr naming the file.
set -u
QAT_BIN=${QAT_BIN:-build/qat}
if [ ! -x "$QAT_BIN" ]; then echo "skipped: no qat binary at $QAT_BIN"; exit 77; fi
command -v python3 >/dev/null || { echo "skipped: no python3"; exit 77; }

T=$(mktemp -d /tmp/qat-inspect-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
check() { # check DESCRIPTION COMMAND...: run a shell test, report
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}

python3 - "$T" <<'EOF'
import json, math, os, struct, sys
T = sys.argv[1]
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8}

def write_st(path, tensors, meta=None, pad=True):
    """tensors: list of (name, dtype, shape); data bytes are a counter pattern."""
    header, blobs, off = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, dt, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nb = n * SIZES[dt]
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + nb]}
        blobs.append(bytes((off + i) % 251 for i in range(nb)))
        off += nb
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def raw(path, hlen, body):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", hlen) + body)

good = [("model.embed_tokens.weight", "F32", [5, 3]), ("model.norm.weight", "BF16", [3]),
        ("lm_head.weight", "F16", [5, 3]), ("step", "I64", []), ("empty", "U8", [0, 7])]
write_st(f"{T}/good.safetensors", good, {"format": "pt", "note": "tiny"}, pad=False)
# expected totals, per dtype and overall: "params bytes"
params = sum(math.prod(s) for _, _, s in good)
nbytes = sum(math.prod(s) * SIZES[d] for _, d, s in good)
open(f"{T}/good.expect", "w").write(f"{params} parameters, {nbytes} bytes\n")

os.makedirs(f"{T}/model")
write_st(f"{T}/model/model.safetensors", good[:2])
json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
           "rope_theta": 10000.0, "tie_word_embeddings": True, "unrelated_key": "zzz-not-shown"},
          open(f"{T}/model/config.json", "w"))

os.makedirs(f"{T}/sharded")
write_st(f"{T}/sharded/model-00001-of-00002.safetensors", good[:2])
write_st(f"{T}/sharded/model-00002-of-00002.safetensors", good[2:3])
json.dump({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                          "model.norm.weight": "model-00001-of-00002.safetensors",
                          "lm_head.weight": "model-00002-of-00002.safetensors"}},
          open(f"{T}/sharded/model.safetensors.index.json", "w"))
json.dump({"model_type": "llama"}, open(f"{T}/sharded/config.json", "w"))

# malformed files
raw(f"{T}/huge_header.safetensors", 0xFFFFFFFFFFFFFFFF, b"{}")
open(f"{T}/short.safetensors", "wb").write(b"\x01\x02")  # shorter than the length field
h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
raw(f"{T}/overlap.safetensors", len(h), h + bytes(12))
os.makedirs(f"{T}/badshard")
write_st(f"{T}/badshard/model-00001-of-00002.safetensors", good[:1])
h = b'{"lm_head.weight": {"dtype": "F16", "shape": [5, 3], "data_offsets": [0, 31]}}'
raw(f"{T}/badshard/model-00002-of-00002.safetensors", len(h), h + bytes(30))
json.dump({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                          "lm_head.weight": "model-00002-of-00002.safetensors"}},
          open(f"{T}/badshard/model.safetensors.index.json", "w"))
os.makedirs(f"{T}/badconfig")
write_st(f"{T}/badconfig/model.safetensors", good[:1])
open(f"{T}/badconfig/config.json", "w").write('{"model_type": ')
EOF
[ $? -eq 0 ] || { echo "FAIL: python fixture generation"; exit 1; }

# --- good file ---
out=$("$QAT_BIN" inspect "$T/good.safetensors" 2>"$T/err"); rc=$?
echo "$out"
check "good file exits 0" test $rc -eq 0
check "good file: nothing on stderr" test ! -s "$T/err"
for want in "model.embed_tokens.weight" "model.norm.weight" "lm_head.weight" "F32" "BF16" "F16" \
            "I64" "[5, 3]" "format = pt" "note = tiny" "$(cat "$T/good.expect")"; do
  check "good file output has '$want'" grep -qF -- "$want" <<<"$out"
done
check "scalar shown as []" grep -qE '^ +step +I64 +\[\]$' <<<"$out"
check "zero-size shown as [0, 7]" grep -qE '^ +empty +U8 +\[0, 7\]$' <<<"$out"
check "per-dtype line for F16" grep -qE '^ +F16 +1 tensors +15 parameters +30 bytes' <<<"$out"

# --- folder with config.json ---
out=$("$QAT_BIN" inspect "$T/model" 2>"$T/err"); rc=$?
echo "$out"
check "folder exits 0" test $rc -eq 0
for want in 'model_type' '"llama"' '["LlamaForCausalLM"]' 'hidden_size' '64' 'rope_theta' \
            'tie_word_embeddings' 'true' 'model.norm.weight' '18 parameters'; do
  check "folder output has '$want'" grep -qF -- "$want" <<<"$out"
done
check "folder output omits unlisted config keys" bash -c "! grep -q zzz-not-shown <<<'$out'"

# --- sharded folder ---
out=$("$QAT_BIN" inspect "$T/sharded" 2>"$T/err"); rc=$?
echo "$out"
check "sharded exits 0" test $rc -eq 0
check "sharded: both shards listed" bash -c "grep -q 'model-00001-of-00002' <<<'$out' && grep -q 'model-00002-of-00002' <<<'$out'"
check "sharded: 3 tensors in 2 files" grep -qF "3 tensors in 2 files" <<<"$out"

# --- malformed inputs: exit 1, one line on stderr naming the file, nothing on stdout ---
bad() { # bad PATH NAME_IN_MESSAGE
  local p=$1 name=$2 rc lines
  "$QAT_BIN" inspect "$p" >"$T/out" 2>"$T/err"; rc=$?
  lines=$(wc -l <"$T/err")
  echo "  stderr: $(cat "$T/err")"
  check "$name: exit 1" test $rc -eq 1
  check "$name: one line on stderr" test "$lines" -eq 1
  check "$name: message format" grep -qE "^qat inspect: error: .*$name" "$T/err"
  check "$name: nothing on stdout" test ! -s "$T/out"
}
bad "$T/huge_header.safetensors" "huge_header.safetensors"
bad "$T/short.safetensors" "short.safetensors"
bad "$T/overlap.safetensors" "overlap.safetensors"
bad "$T/badshard" "model-00002-of-00002.safetensors"
bad "$T/badconfig" "config.json"
bad "$T/does-not-exist" "does-not-exist"

"$QAT_BIN" inspect >/dev/null 2>&1; rc=$?
check "no PATH is a usage error (exit 2)" test $rc -eq 2
"$QAT_BIN" inspect --help >"$T/out" 2>&1; rc=$?
check "--help exits 0" test $rc -eq 0

exit $fail

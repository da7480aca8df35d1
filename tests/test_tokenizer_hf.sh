#!/usr/bin/env bash
# `qat tokenize` on Hugging Face tokenizer.json folders, token for token against the `tokenizers`
# library (tests/ref/hf_tokenizer_ref.py), which trains small BPEs configured as Llama-3's,
# Qwen2's, GPT-2's and SmolLM2's tokenizer.json are (no real one is available offline), one with
# a mix of the other pre-tokenizers (Digits runs, Punctuation, Split behaviors, ByteLevel's
# prefix space, an EOS template), a SentencePiece-style one (Metaspace split, byte fallback), and
# converts the real Llama-2 tokenizer.model with transformers' LlamaConverter (legacy Prepend +
# Replace, and non-legacy Metaspace as Mistral ships it; those ids must also equal sentencepiece's
# on tokenizer.model for the legacy file):
#  - TinyStories, WikiText-2 and a stress text (mixed scripts, ZWJ emoji, decomposed accents,
#    upper-case contractions, digit runs, CRLF / lone CR, tabs, trailing spaces, literal special
#    tokens, U+180E, invalid UTF-8 read as U+FFFD), each with --docs blank-line and --docs none;
#    BOS per document from the folder (Llama-3: the template / tokenizer_config.json; Qwen2: none;
#    GPT-2: config.json; SmolLM2: add_bos_token false although a bos_token is named; Llama-2:
#    add_bos_token true, add_eos_token false over a "<s> $A </s>" template), EOS appended from a
#    "$A <eos>" template, and the tokenizer.json alone (no folder files);
#  - 24 re-configured files (every Metaspace prepend_scheme x split with added tokens in the text,
#    the legacy Llama-2 normalizer, a Regex Replace with ^, every Split behavior x invert, Digits
#    runs, WhitespaceSplit, Punctuation, ByteLevel before other steps) on the stress text;
#  - real vocabularies when present: llama.cpp's ggml-vocab-{llama-bpe,qwen2,starcoder,gpt-2}.gguf
#    rebuilt as tokenizer.json, against the ids Hugging Face's original tokenizers gave for
#    llama.cpp's hard cases, and SmolLM2-135M's own tokenizer (its cached GGUF) on WikiText-2
#    and TinyStories;
#  - decoding: the pieces of every id concatenate to what tokenizers' decode gives (the input,
#    NFC-normalized for Qwen2), through the round-trip mode of tests/test_tokenizer_json.c;
#  - encode speed (MB/s) on TinyStories;
#  - bad files (truncated, model.type Unigram, a merge naming an unknown symbol, ...): exit status
#    1 with one line naming the file and the key, no output left behind.
# Skips (77) only when the assets are absent.
set -u
cd "$(dirname "$0")/.."
QAT=${QAT_BIN:-build/qat}
ASSETS=${QAT_ASSETS:-../shared/assets}
TS=$ASSETS/text/tinystories_val.txt
WT=$ASSETS/text/wikitext2_test.raw
for f in "$TS" "$WT"; do
  if [ ! -f "$f" ]; then
    echo "skipped: asset $f not found (set QAT_ASSETS)"
    exit 77
  fi
done
[ -x "$QAT" ] || { echo "FAIL: qat binary $QAT not found (set QAT_BIN)"; exit 1; }
RT=$(dirname "$QAT")/test_tokenizer_json # its --roundtrip mode decodes with qat_tokenizer_piece
[ -x "$RT" ] || { echo "FAIL: $RT not built"; exit 1; }
python3 -c 'import tokenizers, numpy' ||
  { echo "FAIL: python tokenizers package missing (pip install tokenizers)"; exit 1; }
export RAYON_RS_NUM_CPUS=1 RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

TMP=$(mktemp -d /tmp/qat-hftok-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
REF="python3 tests/ref/hf_tokenizer_ref.py"
if [ "${QAT_SANITIZED:-0}" = 1 ]; then
  # under ASan the whole texts take ~4 minutes of CI: the first ~300 KB of each (whole lines)
  # still meet every pre-tokenizer path; the optimized pass runs the full files
  head -c 300000 "$TS" | sed '$d' > "$TMP/ts_head.txt"
  head -c 300000 "$WT" | sed '$d' > "$TMP/wt_head.txt"
  TS=$TMP/ts_head.txt WT=$TMP/wt_head.txt
  echo "sanitizer build: the first 300 KB of TinyStories and WikiText-2"
fi
fail=0
die() { echo "FAIL: $*"; fail=1; }

ST=$TMP/stress.txt
$REF stress "$ST" && $REF build "$TMP" --assets "$ASSETS" --stress "$ST" | tee "$TMP/build.log" ||
  { echo "FAIL: could not train the reference tokenizers"; exit 1; }
KINDS="llama3 qwen2 gpt2 smollm2 mixed spm"
for k in llama2 llama2m; do
  if [ -f "$TMP/$k/tokenizer.json" ]; then KINDS="$KINDS $k"; else
    echo "skipped $k: not built (transformers / protobuf missing: $(grep "$k" "$TMP/build.log"))"; fi
done
SPM=$ASSETS/tokenizers/llama2/tokenizer.model

# --- ids against tokenizers ---------------------------------------------------------------------
# qat runs here; each comparison is a line of $JOBS, all checked by one Python process below
JOBS=$TMP/jobs.txt
: > "$JOBS"
job() { printf '%q ' "$@" >> "$JOBS"; echo >> "$JOBS"; }
# every file in both document modes for the first three kinds; for the others TinyStories as
# documents, WikiText-2 as one stream (it has no blank lines) and the stress text both ways
for k in $KINDS; do
  spm=()
  [ "$k" = llama2 ] && spm=(--spm "$SPM") # the legacy file must also be sentencepiece's ids
  for run in "$TS blank-line" "$TS none" "$WT blank-line" "$WT none" "$ST blank-line" "$ST none"; do
    set -- $run
    f=$1 d=$2
    case "$k:$f:$d" in llama3:* | qwen2:* | gpt2:* | *:"$TS":blank-line | *:"$WT":none | *:"$ST":*) ;;
      *) continue ;; esac
    out=$TMP/$k-$(basename "$f")-$d.npy
    "$QAT" tokenize --tokenizer "$TMP/$k" --in "$f" --out "$out" --docs "$d" >"$TMP/log" ||
      { die "qat tokenize $k $f --docs $d: $(cat "$TMP/log")"; continue; }
    job check --tok "$TMP/$k" --in "$f" --docs "$d" --npy "$out" "${spm[@]}"
  done
done
# re-configured spm / smollm2 files: every Metaspace scheme x split, Split behavior x invert and
# the other steps (hf_tokenizer_ref.py variants), on the stress text
$REF variants "$TMP" > "$TMP/variants.txt" && [ -s "$TMP/variants.txt" ] ||
  die "could not write the variant tokenizers"
while read -r v; do
  "$QAT" tokenize --tokenizer "$v" --in "$ST" --out "$v.npy" --docs none >"$TMP/log" ||
    { die "qat tokenize $v: $(cat "$TMP/log")"; continue; }
  job check --tok "$v" --in "$ST" --docs none --npy "$v.npy"
done < "$TMP/variants.txt"
# --- real vocabularies ---------------------------------------------------------------------------
# llama.cpp's tokenizer test vocabularies (Llama-3, Qwen2, StarCoder = SmolLM2's layout, GPT-2;
# in the llama-cpp-python sdist, never in this repository): tokenizer.json rebuilt from the GGUF
# keys, then qat's ids on llama.cpp's 46 hard cases must be the ids Hugging Face's original
# tokenizer gave (the .out files), and Llama-3's / Qwen2's equal tokenizers' on WikiText-2
LLAMACPP=${QAT_LLAMACPP_MODELS:-$(ls -d ../peers/llama_cpp_python-*/vendor/llama.cpp/models 2>/dev/null | head -1)}
if [ -n "$LLAMACPP" ] && [ -d "$LLAMACPP" ]; then
  for n in llama-bpe qwen2 starcoder gpt-2; do
    v=$LLAMACPP/ggml-vocab-$n.gguf
    [ -f "$v" ] && [ -f "$v.inp" ] || { echo "skipped $n: $v not found"; continue; }
    $REF gguf-vocab "$v" "$TMP/gg-$n" >/dev/null &&
      "$RT" --cases "$TMP/gg-$n" "$v.inp" "$TMP/gg.out" >/dev/null &&
      $REF check-cases --tok "$TMP/gg-$n" --inp "$v.inp" --want "$v.out" --got "$TMP/gg.out" ||
      { die "real vocabulary $n"; continue; }
    case $n in llama-bpe | qwen2)
      "$QAT" tokenize --tokenizer "$TMP/gg-$n" --in "$WT" --out "$TMP/gg-$n.npy" --docs none \
        >/dev/null && job check --tok "$TMP/gg-$n" --in "$WT" --docs none --npy "$TMP/gg-$n.npy" ||
        die "real vocabulary $n on WikiText-2" ;;
    esac
  done
else
  echo "skipped real vocabularies: no llama.cpp models/ folder (set QAT_LLAMACPP_MODELS)"
fi
# SmolLM2-135M's own tokenizer, from its GGUF when scripts/fetch_smollm2.sh has cached it
SMOL=${QAT_CACHE:-$HOME/.cache/qat}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$SMOL" ]; then
  $REF gguf-vocab "$SMOL" "$TMP/smollm2-real" >/dev/null || die "SmolLM2 tokenizer rebuild"
  for run in "$WT none" "$TS blank-line"; do
    set -- $run
    out=$TMP/smollm2-real-$2.npy
    "$QAT" tokenize --tokenizer "$TMP/smollm2-real" --in "$1" --out "$out" --docs "$2" \
      >/dev/null && job check --tok "$TMP/smollm2-real" --in "$1" --docs "$2" --npy "$out" ||
      die "SmolLM2's tokenizer on $1"
  done
else
  echo "skipped SmolLM2's own tokenizer: $SMOL not cached (scripts/fetch_smollm2.sh)"
fi

# the tokenizer.json alone: Llama-3's BOS comes from its template; GPT-2's file names none
"$QAT" tokenize --tokenizer "$TMP/llama3/tokenizer.json" --in "$ST" --out "$TMP/l3.npy" \
  >/dev/null && job check --tok "$TMP/llama3" --in "$ST" --npy "$TMP/l3.npy" ||
  die "llama3 tokenizer.json alone"
"$QAT" tokenize --tokenizer "$TMP/gpt2/tokenizer.json" --in "$ST" --out "$TMP/g2.npy" \
  >/dev/null && job check --tok "$TMP/gpt2" --in "$ST" --npy "$TMP/g2.npy" --no-bos ||
  die "gpt2 tokenizer.json alone"
$REF many "$JOBS" || die "ids differ from tokenizers (FAIL lines above)"
# the SentencePiece-style file alone: its template adds <s> ... </s>
"$QAT" tokenize --tokenizer "$TMP/spm/tokenizer.json" --in "$ST" --out "$TMP/sp.npy" >/dev/null &&
  python3 - "$TMP/sp.npy" "$TMP/spm-stress.txt-blank-line.npy" <<'PY' || die "spm tokenizer.json alone"
import sys, numpy as np
alone, folder = np.load(sys.argv[1]).tolist(), np.load(sys.argv[2]).tolist()
bos, eos = 1, 2
assert alone.count(bos) == alone.count(eos) == folder.count(bos) > 0 and folder.count(eos) == 0
assert [t for t in alone if t != eos] == folder, "the file alone is not the folder's ids + EOS"
print(f"ok spm tokenizer.json alone: {alone.count(eos)} documents end with </s> (the template)")
PY

# --- decoding -----------------------------------------------------------------------------------
# qat_tokenizer_piece returns C strings, so the stress text's one NUL byte cannot come back.
: > "$JOBS"
for k in $KINDS; do
  for f in "$TS" "$WT" "$ST"; do job decode --tok "$TMP/$k" --in "$f" --out "$TMP/want-$k-$(basename "$f")"; done
done
$REF many "$JOBS" || die "the reference decode failed (FAIL lines above)"
for k in $KINDS; do
  for f in "$TS" "$WT" "$ST"; do
    want=$TMP/want-$k-$(basename "$f")
    [ -f "$want" ] && "$RT" --roundtrip "$TMP/$k" "$f" "$TMP/got.txt" >/dev/null &&
      tr -d '\000' < "$want" | cmp -s - "$TMP/got.txt" &&
      echo "ok decode $k $(basename "$f"): $(wc -c < "$TMP/got.txt") bytes" ||
      die "decode $k $f differs from tokenizers' decode"
  done
done

# --- qat generate: the prompt is echoed as decoded, with or without a BOS -------------------------
# a random 1-layer model with a vocab that holds every id (the echo needs no trained weights:
# --steps 0 generates nothing); Qwen2's folder has no BOS, so an empty prompt is refused
for k in $KINDS; do
  [ "$k" = mixed ] && continue # its ByteLevel add_prefix_space puts a space before every piece
  M=$TMP/model-$k
  mkdir -p "$M" && cp "$TMP/$k"/*.json "$M/"
  PYTHONPATH=tests/ref python3 - "$M" <<'PY' || die "could not write the $k test model"
import json, os, sys
import numpy as np
import st_np
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, "config.json"))) if os.path.exists(os.path.join(d, "config.json")) else {}
V, C, F = max(2048, json.load(open(os.path.join(d, "expect.json")))["vocab"]), 16, 32
cfg.update({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
            "intermediate_size": F, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 2, "vocab_size": V, "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True})
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
r = np.random.default_rng(0)
p = "model.layers.0."
t = {"model.embed_tokens.weight": r.normal(0, 1, (V, C)), "model.norm.weight": np.ones(C),
     p + "input_layernorm.weight": np.ones(C), p + "post_attention_layernorm.weight": np.ones(C)}
for n, sh in [("self_attn.q_proj", (C, C)), ("self_attn.k_proj", (C, C)), ("self_attn.v_proj", (C, C)),
              ("self_attn.o_proj", (C, C)), ("mlp.gate_proj", (F, C)), ("mlp.up_proj", (F, C)),
              ("mlp.down_proj", (C, F))]:
    t[p + n + ".weight"] = r.normal(0, 0.1, sh)
st_np.write(os.path.join(d, "model.safetensors"), t)
PY
  prompt="Once upon a time, Zoë's café served 42 crêpes."
  "$QAT" generate --model "$M" --device cpu --prompt "$prompt" --steps 0 --temperature 0     > "$TMP/gen.txt" 2>"$TMP/gen.err" || { die "generate $k: $(cat "$TMP/gen.err")"; continue; }
  printf '%s\n' "$prompt" | cmp -s - "$TMP/gen.txt" && echo "ok generate echo $k" ||
    die "generate $k echoed '$(cat "$TMP/gen.txt")' for '$prompt'"
done
"$QAT" generate --model "$TMP/model-qwen2" --device cpu --steps 1 > /dev/null 2> "$TMP/gen.err"
[ $? = 2 ] && grep -q "no BOS" "$TMP/gen.err" || die "generate without BOS or prompt: $(cat "$TMP/gen.err")"

# --- speed --------------------------------------------------------------------------------------
for k in llama3 qwen2; do
  "$QAT" tokenize --tokenizer "$TMP/$k" --in "$TS" --out "$TMP/speed.npy" --docs none >"$TMP/log"
  awk -v k="$k" -v bytes="$(wc -c < "$TS")" '{for (i = 1; i < NF; i++) if ($(i + 1) == "s" &&
    $i + 0 > 0) printf "speed %s TinyStories (--docs none): %.1f MB/s\n", k, bytes / 1e6 / $i}' \
    "$TMP/log"
done

# --- bad files ----------------------------------------------------------------------------------
# expect_error STATUS TEXT-IN-MESSAGE ARGS...
expect_error() {
  local want=$1 name=$2
  shift 2
  rm -f "$TMP/err.npy"
  "$QAT" tokenize "$@" >/dev/null 2>"$TMP/err.txt"
  local rc=$?
  [ "$rc" = "$want" ] || die "$* -> exit $rc, want $want"
  [ "$(wc -l < "$TMP/err.txt")" = 1 ] || die "$* -> not one line of stderr: $(cat "$TMP/err.txt")"
  grep -qF -- "$name" "$TMP/err.txt" || die "$* -> message lacks $name: $(cat "$TMP/err.txt")"
  [ ! -e "$TMP/err.npy" ] || die "$* -> left an output file"
  echo "ok error: $(cat "$TMP/err.txt")"
}
L3=$TMP/llama3/tokenizer.json
mkdir -p "$TMP/bad"
head -c 50000 "$L3" > "$TMP/bad/truncated.json"
expect_error 1 "$TMP/bad/truncated.json: not valid JSON" \
  --tokenizer "$TMP/bad/truncated.json" --in "$ST" --out "$TMP/err.npy"
python3 - "$L3" "$TMP/bad" <<'EOF'
import json, sys
src, d = sys.argv[1], sys.argv[2]
def variant(name, edit):
    j = json.load(open(src, encoding="utf-8"))
    edit(j)
    json.dump(j, open(f"{d}/{name}.json", "w", encoding="utf-8"), ensure_ascii=False)
variant("unigram", lambda j: j["model"].update(type="Unigram"))
variant("unknown_merge", lambda j: j["model"]["merges"].insert(7, ["\u0120the", "zz\u00e9\u00e9"]))
variant("nfkc", lambda j: j.update(normalizer={"type": "NFKC"}))
variant("dropout", lambda j: j["model"].update(dropout=0.1))
variant("no_model", lambda j: j.pop("model"))
variant("ctc", lambda j: j.update(decoder={"type": "CTC"}))
variant("precompiled", lambda j: j.update(normalizer={"type": "Sequence", "normalizers": [
    {"type": "NFC"}, {"type": "Precompiled", "precompiled_charsmap": "AAAA"}]}))
variant("metaspace", lambda j: j.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "sometimes"}]}))
variant("template", lambda j: j.update(post_processor={"type": "TemplateProcessing", "single": [
    {"SpecialToken": {"id": "<|nope|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {}}))
EOF
B=$TMP/bad
expect_error 1 "$B/unigram.json: model.type \"Unigram\"" --tokenizer "$B/unigram.json" --in "$ST" \
  --out "$TMP/err.npy"
expect_error 1 "$B/unknown_merge.json: model.merges[7]: \"zzéé\" is not in model.vocab" \
  --tokenizer "$B/unknown_merge.json" --in "$ST" --out "$TMP/err.npy"
expect_error 1 "$B/nfkc.json: normalizer.type" --tokenizer "$B/nfkc.json" --in "$ST" \
  --out "$TMP/err.npy"
expect_error 1 "$B/dropout.json: model.dropout" --tokenizer "$B/dropout.json" --in "$ST" \
  --out "$TMP/err.npy"
expect_error 1 "$B/no_model.json: no \"model\"" --tokenizer "$B/no_model.json" --in "$ST" \
  --out "$TMP/err.npy"
expect_error 1 "$L3: tokenizer ids reach 2005, more than the vocab of 1000" --tokenizer "$L3" \
  --vocab 1000 --in "$ST" --out "$TMP/err.npy"
expect_error 1 "$B/ctc.json: decoder.type \"CTC\"" --tokenizer "$B/ctc.json" --in "$ST" \
  --out "$TMP/err.npy"
expect_error 1 "$B/precompiled.json: normalizer.normalizers[1].type \"Precompiled\"" \
  --tokenizer "$B/precompiled.json" --in "$ST" --out "$TMP/err.npy"
expect_error 1 "$B/metaspace.json: pre_tokenizer.pretokenizers[1].prepend_scheme \"sometimes\"" \
  --tokenizer "$B/metaspace.json" --in "$ST" --out "$TMP/err.npy"
expect_error 1 "$B/template.json: post_processor.single: special token \"<|nope|>\"" \
  --tokenizer "$B/template.json" --in "$ST" --out "$TMP/err.npy"
cp "$L3" "$B/tokenizer.json"
echo '{"bos_token": "<|nope|>"}' > "$B/tokenizer_config.json"
expect_error 1 "$B/tokenizer_config.json: bos_token \"<|nope|>\"" --tokenizer "$B" --in "$ST" \
  --out "$TMP/err.npy"
echo '{"add_bos_token": "yes"}' > "$B/tokenizer_config.json"
expect_error 1 "$B/tokenizer_config.json: add_bos_token is not a boolean" --tokenizer "$B" \
  --in "$ST" --out "$TMP/err.npy"

if [ $fail = 0 ]; then echo "PASS test_tokenizer_hf"; fi
exit $fail

#!/usr/bin/env bash
# `qat tokenize` end to end against independent Python references:
#  - llama2.c tokenizer.bin (stories260K's tok512.bin) on the whole TinyStories text, split into
#    documents on blank lines, token for token against tests/ref/llama2c_tokenizer.py, for
#    --split all / train / heldout (and train + heldout == all); a CRLF copy gives the same tokens;
#    --docs none on a slice; a model folder finds its tokenizer.bin;
#  - randomized synthetic vocabularies for encode()'s corner cases (tests/ref/tokenizer_fuzz.py);
#  - SentencePiece tokenizer.model (Llama 2) on ~200 KB of WikiText-2 against the Python
#    sentencepiece package;
#  - errors: missing files, a truncated tokenizer.bin, a bad flag value: exit status 1 (2 for
#    usage), one line naming the file, no output left behind.
# Skips (77) only when the assets are absent.
set -u
cd "$(dirname "$0")/.."
QAT=${QAT_BIN:-build/qat}
ASSETS=${QAT_ASSETS:-../shared/assets}
TOK=$ASSETS/stories260K/tok512.bin
SPM=$ASSETS/tokenizers/llama2/tokenizer.model
TS=$ASSETS/text/tinystories_val.txt
WT=$ASSETS/text/wikitext2_test.raw
for f in "$TOK" "$SPM" "$TS" "$WT"; do
  if [ ! -f "$f" ]; then
    echo "skipped: asset $f not found (set QAT_ASSETS)"
    exit 77
  fi
done
[ -x "$QAT" ] || { echo "FAIL: qat binary $QAT not found (set QAT_BIN)"; exit 1; }

TMP=$(mktemp -d /tmp/qat-tok-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
REF="python3 tests/ref/llama2c_tokenizer.py"
fail=0
die() { echo "FAIL: $*"; fail=1; }

# --- tokenizer.bin on TinyStories --------------------------------------------------------------
for split in all train heldout; do
  t0=$(date +%s.%N)
  "$QAT" tokenize --tokenizer "$TOK" --in "$TS" --out "$TMP/ts_$split.npy" --docs blank-line \
    --split "$split" || die "qat tokenize --split $split"
  t1=$(date +%s.%N)
  echo "wall time (--split $split): $(awk "BEGIN{print $t1 - $t0}") s"
done
$REF --tokenizer "$TOK" --in "$TS" --docs blank-line --check all="$TMP/ts_all.npy" \
  --check train="$TMP/ts_train.npy" --check heldout="$TMP/ts_heldout.npy" ||
  die "tinystories tokens differ from the Python reference"
python3 - "$TMP" <<'EOF' || die "train + heldout != all"
import sys, numpy as np
d = sys.argv[1]
a, tr, ho = (np.load(f"{d}/ts_{s}.npy") for s in ("all", "train", "heldout"))
assert a.dtype == np.uint16, a.dtype
assert len(tr) > 0 and len(ho) > 0, (len(tr), len(ho))
assert np.array_equal(np.concatenate([tr, ho]), a), "splits do not concatenate to all"
# every document starts with BOS; held-out starts on a document boundary
assert ho[0] == 1 and tr[0] == 1 and a[0] == 1
docs = int((a == 1).sum())
assert int((ho == 1).sum()) == docs - docs * 9 // 10, "held-out is not the last 10% of documents"
print(f"ok splits: {len(tr)} + {len(ho)} = {len(a)} tokens, {docs} documents")
EOF

# CRLF line ends give the same documents and tokens.
sed 's/$/\r/' "$TS" > "$TMP/ts_crlf.txt"
"$QAT" tokenize --tokenizer "$TOK" --in "$TMP/ts_crlf.txt" --out "$TMP/ts_crlf.npy" >/dev/null &&
  cmp -s "$TMP/ts_crlf.npy" "$TMP/ts_all.npy" || die "CRLF text tokenizes differently"

# --docs none: one BOS, the text verbatim (a slice: the reference rescans, O(n^2)).
head -c 16000 "$TS" > "$TMP/ts_head.txt"
"$QAT" tokenize --tokenizer "$TOK" --in "$TMP/ts_head.txt" --out "$TMP/ts_none.npy" --docs none \
  >/dev/null || die "qat tokenize --docs none"
$REF --tokenizer "$TOK" --in "$TMP/ts_head.txt" --docs none --check all="$TMP/ts_none.npy" ||
  die "--docs none differs from the reference"

# A model folder: its tokenizer.bin is found; --vocab matching the file works.
mkdir -p "$TMP/model"
cp "$TOK" "$TMP/model/tokenizer.bin"
"$QAT" tokenize --tokenizer "$TMP/model" --in "$TMP/ts_head.txt" --out "$TMP/dir.npy" --docs none \
  --vocab 512 >/dev/null && cmp -s "$TMP/dir.npy" "$TMP/ts_none.npy" ||
  die "tokenizer folder / --vocab 512 differs"

# --- synthetic vocabularies: encode()'s corner cases --------------------------------------------
mkdir -p "$TMP/fuzz"
python3 tests/ref/tokenizer_fuzz.py "$QAT" "$TMP/fuzz" 80 || die "fuzz cases differ"

# --- SentencePiece on WikiText-2 ----------------------------------------------------------------
python3 -c 'import sentencepiece' || die "python sentencepiece package missing (pip install sentencepiece)"
head -c 200000 "$WT" | sed '$d' > "$TMP/wt.txt" # whole lines only: no split UTF-8 character
"$QAT" tokenize --tokenizer "$SPM" --in "$TMP/wt.txt" --out "$TMP/wt.npy" --docs none ||
  die "qat tokenize (sentencepiece)"
$REF --spm "$SPM" --in "$TMP/wt.txt" --docs none --check all="$TMP/wt.npy" ||
  die "sentencepiece tokens differ from the Python sentencepiece package"

# --- errors -------------------------------------------------------------------------------------
# expect_error STATUS FILE-NAMED-IN-MESSAGE ARGS...
expect_error() {
  local want=$1 name=$2
  shift 2
  rm -f "$TMP/err.npy"
  "$QAT" tokenize "$@" >/dev/null 2>"$TMP/err.txt"
  local rc=$?
  local lines
  lines=$(wc -l < "$TMP/err.txt")
  [ "$rc" = "$want" ] || die "$* -> exit $rc, want $want"
  [ "$lines" = 1 ] || die "$* -> $lines lines of stderr: $(cat "$TMP/err.txt")"
  grep -qF -- "$name" "$TMP/err.txt" || die "$* -> message does not name $name: $(cat "$TMP/err.txt")"
  [ ! -e "$TMP/err.npy" ] || die "$* -> left an output file"
  ls "$TMP" | grep -q 'err.npy.tmp' && die "$* -> left a temporary file"
  echo "ok error: $(cat "$TMP/err.txt")"
}
head -c 3000 "$TOK" > "$TMP/trunc.bin"
expect_error 1 "$TMP/missing.bin" --tokenizer "$TMP/missing.bin" --in "$TS" --out "$TMP/err.npy"
expect_error 1 "$TMP/missing.txt" --tokenizer "$TOK" --in "$TMP/missing.txt" --out "$TMP/err.npy"
expect_error 1 "$TMP/trunc.bin" --tokenizer "$TMP/trunc.bin" --in "$TS" --out "$TMP/err.npy"
expect_error 1 "$TOK" --tokenizer "$TOK" --vocab 513 --in "$TS" --out "$TMP/err.npy"
expect_error 1 "$WT" --tokenizer "$WT" --in "$TS" --out "$TMP/err.npy"
expect_error 1 "$TMP/nodir/x.npy" --tokenizer "$TOK" --in "$TMP/ts_head.txt" --out "$TMP/nodir/x.npy"
expect_error 2 "--docs" --tokenizer "$TOK" --in "$TS" --out "$TMP/err.npy" --docs paragraphs
expect_error 2 "--split" --tokenizer "$TOK" --in "$TS" --out "$TMP/err.npy" --split test

if [ $fail = 0 ]; then echo "PASS test_tokenizer"; fi
exit $fail

# Sourced by the script tests that train on stories260K: finds the assets (exit 77, "skipped",
# when absent), makes a temporary directory $T (removed on exit), converts the model to $T/m and
# tokenizes TinyStories into $T/train.npy (first 90% of documents) and $T/val.npy (the rest).
# Sets QAT (the binary) and A (the assets).
QAT=${QAT_BIN:-build/qat}
A=${QAT_ASSETS:-../shared/assets}
[ -f "$A/stories260K/stories260K.bin" ] || { echo "skipped: assets not found"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$QAT" convert --from llama2c "$A/stories260K/stories260K.bin" --tokenizer "$A/stories260K/tok512.bin" --out "$T/m" >/dev/null
for split in train heldout; do
  out=$T/$split.npy
  [ $split = heldout ] && out=$T/val.npy
  "$QAT" tokenize --tokenizer "$A/stories260K/tok512.bin" --in "$A/text/tinystories_val.txt" \
    --split $split --out "$out" 2>/dev/null
done

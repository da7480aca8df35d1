#!/usr/bin/env bash
# qat generate through the KV cache equals the no-cache path (the whole context rerun every
# token) on stories260K, token for token: greedy from BOS and from a prompt, seeded top-p
# sampling, and RTN fake-quant models (rtn:4g32, rtn:2g32:mse); a request past max_seq (512)
# stops there without error; the stderr line reports prefill and decode tokens/s.
# Skips (77) when the assets are absent.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
. "$(dirname "$0")/lib_stories260k.sh"
fail() { echo "FAIL: $*"; exit 1; }

same() { # $1: label; the rest: generate flags
  local label=$1
  shift
  "$QAT" generate --model "$T/m" --device cpu "$@" > "$T/a.txt" 2> "$T/a.err" || fail "$label: $(cat "$T/a.err")"
  "$QAT" generate --model "$T/m" --device cpu "$@" --no-cache > "$T/b.txt" 2> "$T/b.err" ||
    fail "$label --no-cache: $(cat "$T/b.err")"
  grep -q "(kv cache)" "$T/a.err" && grep -q "(no cache)" "$T/b.err" || fail "$label: stats lines $(cat "$T/a.err" "$T/b.err")"
  cmp -s "$T/a.txt" "$T/b.txt" || fail "$label: cache and no-cache differ: $(cat "$T/a.txt") / $(cat "$T/b.txt")"
  [ -s "$T/a.txt" ] || fail "$label: no output"
  echo "ok $label: $(head -c 70 "$T/a.txt" | tr '\n' ' ')... | $(cat "$T/a.err")"
}

same "greedy from BOS" --temperature 0 --steps 200
same "greedy from a prompt" --temperature 0 --steps 150 --prompt "Tom and his dog went to the"
same "top-p 0.9 seed 7" --temperature 1.0 --top-p 0.9 --seed 7 --steps 150
same "rtn:4g32 greedy" --temperature 0 --steps 120 --quant rtn:4g32 --prompt "The sun was"
same "rtn:2g32:mse sampled" --temperature 0.8 --top-p 0.95 --seed 3 --steps 100 --quant rtn:2g32:mse

# The stats line: prefill and decode tokens/s as numbers.
grep -Eq "prefill [0-9]+ tokens at [0-9.]+ tokens/s; decode [0-9]+ steps at [0-9.]+ tokens/s" "$T/a.err" ||
  fail "stats line: $(cat "$T/a.err")"

# Past the context (max_seq 512): sampling at temperature 2 rarely ends a story, and generation
# stops at position 512 (or at an EOS / BOS before it) without error.
"$QAT" generate --model "$T/m" --device cpu --temperature 2 --top-p 1 --seed 1 --steps 5000 \
  > "$T/long.txt" 2> "$T/long.err" || fail "past max_seq: $(cat "$T/long.err")"
n=$(sed -n 's/^generate: \([0-9]*\) new tokens.*/\1/p' "$T/long.err")
[ -n "$n" ] && [ "$n" -le 511 ] || fail "past max_seq: $(cat "$T/long.err")"
echo "ok past max_seq: $n new tokens (at most 511 after BOS)"
echo "all generate-cache checks passed"

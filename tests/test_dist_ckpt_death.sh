#!/usr/bin/env bash
# A rank killed while the ZeRO-1 optimizer shards are being written (issue 12 items 3 and 5),
# under mpirun, stories260K on the CPU (skipped without mpirun, an MPI build, a C compiler, the
# assets, or in sanitizer builds: the interposer below cannot be preloaded before ASan).
# Rank 1 runs with a preloaded rename() wrapper (compiled here) that SIGKILLs the process just
# before its optim-rank00001.safetensors would be renamed into place in the second checkpoint's
# temporary directory (ckpt 8): the shard is written but not committed, rank 0 waits in the
# checkpoint's agreement. Then:
# - the job ends non-zero within 60 s;
# - the last complete checkpoint (ckpt 4) is intact: its parameter and shard files equal the
#   uninterrupted run's ckpt 4 byte for byte, and no ckpt 8 directory exists (only a temporary);
# - a re-launch resumes from ckpt 4, ends with the uninterrupted run's ckpt 12 byte for byte and
#   removes the dead run's temporary directory.
set -euo pipefail
. "$(dirname "$0")/lib_dist.sh"
[ "${QAT_SANITIZED:-0}" = 1 ] && { echo "skipped: sanitizer build (LD_PRELOAD)"; exit 77; }
CC=${CC:-cc}
command -v "$CC" > /dev/null || { echo "skipped: no C compiler for the interposer"; exit 77; }
. "$(dirname "$0")/lib_stories260k.sh"

cat > "$T/die.c" <<'C'
/* rename() that SIGKILLs its process at the QAT_DIE_AT-th rename onto an optim-rank00001 file */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int rename(const char *a, const char *b) {
  static int seen = 0;
  const char *want = "/optim-rank00001.safetensors", *at = getenv("QAT_DIE_AT");
  size_t lb = strlen(b), lw = strlen(want);
  if (at && lb >= lw && !strcmp(b + lb - lw, want) && ++seen == atoi(at)) {
    const char *mark = getenv("QAT_DIE_MARK");
    FILE *f = mark ? fopen(mark, "w") : NULL;
    if (f) fprintf(f, "%s\n", b), fclose(f);
    raise(SIGKILL);
  }
  int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
  return real(a, b);
}
C
"$CC" -shared -fPIC -O1 -o "$T/die.so" "$T/die.c" -ldl

cat > "$T/c.yaml" <<YAML
model: $T/m
data: {train: $T/train.npy, val: $T/val.npy, seq_len: 32}
method: qat
quant: {bits: 2, group: 32}
train: {steps: 12, batch: 4, lr: 1e-3, lr_quant: 1e-3, warmup: 2, eval_windows: 4}
checkpoint: {dir: $T/run, every: 4, keep: 5}
dist: {zero: 1}
YAML
files="state.safetensors optim-rank00000.safetensors optim-rank00001.safetensors"
dist_mpirun -np 2 "$QAT" train "$T/c.yaml" checkpoint.dir="$T/full" > /dev/null 2> "$T/full.err" ||
  { cat "$T/full.err"; echo "FAIL: uninterrupted run"; exit 1; }

# rank 1 dies at its second shard commit (ckpt 8)
t0=$(date +%s)
set +e
QAT_DIE_SO="$T/die.so" QAT_DIE_MARK="$T/died" mpirun $MPIRUN_FLAGS -np 2 sh -c \
  '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && export LD_PRELOAD="$QAT_DIE_SO" QAT_DIE_AT=2; exec "$@"' \
  sh "$QAT" train "$T/c.yaml" checkpoint.dir="$T/k" dist.timeout_s=30 > /dev/null 2> "$T/k.err"
rc=$?
set -e
dt=$(( $(date +%s) - t0 ))
[ -f "$T/died" ] || { cat "$T/k.err"; echo "FAIL: rank 1 was not killed at its shard write"; exit 1; }
grep -q "ckpt-00000008.tmp-.*/optim-rank00001.safetensors" "$T/died" ||
  { cat "$T/died"; echo "FAIL: killed elsewhere than ckpt 8's shard"; exit 1; }
[ $rc -ne 0 ] || { echo "FAIL: job rc 0 after rank 1 died"; exit 1; }
[ $dt -le 60 ] || { echo "FAIL: the job took ${dt}s to end after rank 1 died"; exit 1; }
echo "rank 1 killed while writing ckpt 8's shard: job ended rc $rc after ${dt}s (whole run)"

[ -f "$T/k/ckpt-00000004/state.json" ] || { ls "$T/k"; echo "FAIL: ckpt 4 not complete"; exit 1; }
for f in $files; do
  cmp "$T/full/ckpt-00000004/$f" "$T/k/ckpt-00000004/$f" || { echo "FAIL: ckpt 4's $f changed"; exit 1; }
done
[ ! -e "$T/k/ckpt-00000008" ] || { ls "$T/k/ckpt-00000008"; echo "FAIL: an incomplete ckpt 8 is in place"; exit 1; }
echo "ckpt 4 intact (3 files equal the uninterrupted run's); no ckpt 8: $(cd "$T/k" && ls | tr '\n' ' ')"

dist_mpirun -np 2 "$QAT" train "$T/c.yaml" checkpoint.dir="$T/k" > /dev/null 2> "$T/k2.err" ||
  { cat "$T/k2.err"; echo "FAIL: re-launch"; exit 1; }
grep -q "resumed from $T/k/ckpt-00000004" "$T/k2.err" || { cat "$T/k2.err"; echo "FAIL: did not resume from ckpt 4"; exit 1; }
for f in $files; do
  cmp "$T/full/ckpt-00000012/$f" "$T/k/ckpt-00000012/$f" || { echo "FAIL: resumed ckpt 12's $f differs"; exit 1; }
done
left=$(cd "$T/k" && ls -d ckpt-*.tmp-* 2>/dev/null || true)
[ -z "$left" ] || { echo "FAIL: the dead run's temporary $left was not cleaned up"; exit 1; }
echo "re-launch resumed from ckpt 4: ckpt 12 equals the uninterrupted run's byte for byte; the temporary is gone"

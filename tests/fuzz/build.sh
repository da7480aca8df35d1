#!/usr/bin/env bash
# Builds the libFuzzer targets tests/fuzz/fuzz_*.c (issue 13 item 2; not wired into CI yet).
# The project's library is compiled with clang -fsanitize=fuzzer-no-link,address,undefined in
# its own build folder (default build-fuzz, or $1); each target links it with
# -fsanitize=fuzzer,address,undefined. Run a target:
#   build-fuzz/fuzz_model_config -max_total_time=60 -rss_limit_mb=2048 tests/fuzz/corpus_model_config
set -euo pipefail
B=${1:-build-fuzz}
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$B" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DQAT_CUDA=OFF \
  -DQAT_MPI=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link $san" -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link $san" \
  > /dev/null
cmake --build "$B" -j"${JOBS:-2}" --target qatlib
libs=$(pkg-config --libs openblas libcjson libcyaml sentencepiece libpcre2-8 libutf8proc)
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer $san -fopenmp -Iinclude -Ihost -I. \
    "$src" "$B/libqatlib.a" $libs -lstdc++ -lm -o "$B/$name"
  echo "built $B/$name"
done

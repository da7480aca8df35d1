#!/usr/bin/env bash
# Builds the libFuzzer targets tests/fuzz/fuzz_*.c (issue 13). The project's library is
# compiled with clang -fsanitize=fuzzer-no-link,address,undefined in its own build folder
# (default build-fuzz, or $1); each target links it with -fsanitize=fuzzer,address,undefined.
# Targets that go through a command (qat inspect) compile that command's cli files in.
# Run them: tests/fuzz/run.sh (what CI and `make fuzz` do).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build-fuzz}
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$B" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DQAT_CUDA=OFF \
  -DQAT_MPI=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link $san" -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link $san" \
  > /dev/null
cmake --build "$B" -j"${JOBS:-2}" --target qatlib > /dev/null
libs=$(pkg-config --libs openblas libcjson libcyaml sentencepiece libpcre2-8 libutf8proc)
inspect="host/cli/cmd_inspect.c host/cli/inspect_gguf.c host/cli/flags.c"
build_one() {
  local src=$1 name extra=""
  name=$(basename "$src" .c)
  case $name in fuzz_gguf | fuzz_packed) extra=$inspect ;; esac
  clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer -fsanitize-link-c++-runtime $san -fopenmp -Iinclude -Ihost -I. \
    "$src" $extra "$B/libqatlib.a" $libs -lstdc++ -lm -o "$B/$name"
  echo "built $B/$name"
}
pids=()
for src in tests/fuzz/fuzz_*.c; do
  build_one "$src" &
  pids+=($!)
  if [ ${#pids[@]} -ge "${JOBS:-2}" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done

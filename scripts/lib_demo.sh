# Shared by the demos (sourced): the OpenBLAS core type and the assets folder.
# Debian's OpenBLAS 0.3.21 can misdetect newer x86 CPUs as Prescott (SSE3 kernels, ~3x slower);
# name the core type from the CPU flags unless the user did.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi

# find_assets FILE: the first of $QAT_ASSETS, ../shared/assets holding FILE (empty if none)
find_assets() {
  local d
  for d in "${QAT_ASSETS:-}" ../shared/assets; do
    [ -n "$d" ] && [ -f "$d/$1" ] && { echo "$d"; return; }
  done
  echo ""
}

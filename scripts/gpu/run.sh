#!/usr/bin/env bash
# Builds and runs the CUDA code on the GPU machine, in one call each:
#   scripts/gpu/run.sh test    build the library for sm_90 and the GPU tests (tests/cuda) only, run
#                              them, then compute-sanitizer memcheck and racecheck on small sizes
#   scripts/gpu/run.sh bench   build the library and scripts/gpu/scan_bench.cpp, time the selective
#                              scan at the TARGETS.md shapes; a short table last
#   scripts/gpu/run.sh profile Nsight Compute on one forward and backward at the first shape
#   scripts/gpu/run.sh all     test and bench
# Logs and JSON go to $OUT (default out/gpu). Each mode fits in 8 minutes including the build.
set -euo pipefail
mode=${1:-test}
cd "$(dirname "$0")/../.."
out=${OUT:-out/gpu}
mkdir -p "$out"
build=build-gpu
jobs=$(nproc)
cuda_home=${CUDA_HOME:-/usr/local/cuda}
export PATH="$cuda_home/bin:$PATH"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader || true
nvcc --version | tail -1
cmake --version | head -1
g++ --version | head -1

# The GPU image has ICU and OpenBLAS headers/libraries without pkg-config files (or not at all):
# stand-in .pc files let CMake configure; the GPU programs never link the tokenizer or BLAS code.
stub_pc="$PWD/$build/pkgconfig"
rm -rf "$stub_pc"
mkdir -p "$stub_pc"
export PKG_CONFIG_PATH="$stub_pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
for module in icu-uc:icuuc icu-i18n:icui18n openblas:openblas; do
  name=${module%%:*} lib=${module##*:}
  if ! pkg-config --exists "$name" 2>/dev/null; then
    libs=""
    [ -e "/usr/lib/x86_64-linux-gnu/lib$lib.so" ] && libs="-l$lib"
    printf 'Name: %s\nDescription: stand-in\nVersion: 0\nLibs: %s\nCflags:\n' "$name" "$libs" >"$stub_pc/$name.pc"
    echo "pkg-config: $name missing, stand-in with '${libs:-no library}'"
  fi
done

# The library's objects are built through CMake except the tokenizer's (the GPU image has no ICU
# headers) and the CLI; the GPU test and bench programs link against an archive of them made here.
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMAMBACPP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DMAMBACPP_TESTS=OFF -DMAMBACPP_BENCH=OFF >"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
fi
start=$(date +%s)
objects=$(find src -name '*.cpp' -o -name '*.cu' | grep -v -e '^src/cli/' -e '^src/tokenizer/' | sort |
  sed 's|^|CMakeFiles/mambacpp_lib.dir/|; s|$|.o|')
ninja -C "$build" -j"$jobs" $objects >"$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
rm -f "$build/libmambacpp_gpu.a"
(cd "$build" && ar rcs libmambacpp_gpu.a $objects)
echo "library objects built in $(( $(date +%s) - start )) s"
libs="$build/libmambacpp_gpu.a -L$cuda_home/lib64 -lcublasLt -lcublas -lcudart $(pkg-config --libs openblas) -lpthread"
cxx_flags="-std=c++20 -O2 -DMAMBACPP_CUDA -Isrc -I$cuda_home/include"

run_tests() {
  echo "== tests"
  g++ $cxx_flags tests/cuda/*.cpp -o "$build/cuda_tests" $libs -lgtest -lgtest_main
  "$build/cuda_tests" --gtest_filter='Cuda*' >"$out/test.log" 2>&1 && echo "all GPU tests passed" ||
    echo "GPU TESTS FAILED"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error|Expected|Which is|^\[==" "$out/test.log" | head -60 || true
  local small='CudaSelectiveScan.AllFeaturesSmall:CudaSelectiveScan.NoOptionalInputs'
  small="$small:CudaSelectiveScan.StepMatchesReference:CudaCausalConv1d.*"
  small="$small:CudaAddNorm.*:CudaEmbedding.*:CudaLinear.*:CudaCrossEntropy.*"
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    if compute-sanitizer --tool "$tool" --error-exitcode 3 "$build/cuda_tests" --gtest_filter="$small" \
      >"$out/$tool.log" 2>&1; then
      tail -3 "$out/$tool.log"
    else
      echo "$tool FAILED"; grep -m 20 -E "=========|FAILED" "$out/$tool.log" || tail -30 "$out/$tool.log"
    fi
  done
}

run_bench() {
  echo "== bench"
  g++ $cxx_flags scripts/gpu/scan_bench.cpp -o "$build/scan_bench" $libs
  "$build/scan_bench" "$out/scan_bench.json"
}

run_profile() {
  echo "== ncu"
  g++ $cxx_flags scripts/gpu/scan_bench.cpp -o "$build/scan_bench" $libs
  ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    -k regex:scan_ "$build/scan_bench" "$out/profile.json" --profile >"$out/ncu.txt" 2>&1 || tail -20 "$out/ncu.txt"
  grep -E "scan_|Duration|Throughput|Warp Cycles Per Issued|Stall|Achieved Occupancy|Registers Per|Issue Slots|Eligible|No Eligible|Block Limit|Executed Ipc|L1/TEX Hit|L2 Hit|Bank" \
    "$out/ncu.txt" | cut -c1-150 | head -120
}

case "$mode" in
  test) run_tests ;;
  bench) run_bench ;;
  profile) run_profile ;;
  all) run_tests; run_bench ;;
  *) echo "usage: scripts/gpu/run.sh test|bench|profile|all" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, CPU only, ASan+UBSan+libFuzzer) in build-fuzz, seeds a
# corpus per target from the fixtures, and runs each target for a fixed time.
# Usage: scripts/fuzz.sh [seconds per target, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
fixtures="${MAMBACPP_FIXTURES:-$(pwd)/../shared/fixtures}"

CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAMBACPP_FUZZ=ON -DMAMBACPP_CUDA=OFF -DMAMBACPP_TESTS=OFF -DMAMBACPP_BENCH=OFF -DMAMBACPP_SANITIZE=ON \
  -DMAMBACPP_FIXTURES="$fixtures" -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link"  # coverage for the library too
cmake --build build-fuzz -j "$(nproc)" --target fuzz_safetensors fuzz_torch_pickle

seed() {  # seed DIR FILES...: copies the existing files into DIR
  local dir="$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do [[ -f "$f" ]] && cp "$f" "$dir/" || true; done
}
# Small seeds mutate fast; the big model files contribute their headers through the small ones' shapes.
seed build-fuzz/corpus/safetensors "$fixtures"/selective_scan_case2.safetensors "$fixtures"/ssd_case1.safetensors
seed build-fuzz/corpus/torch_pickle "$fixtures"/mamba1_original/pytorch_model.bin fuzz/seeds/torch_small.bin

for target in safetensors torch_pickle; do
  echo "== fuzz_$target for ${seconds}s"
  mkdir -p "build-fuzz/artifacts/$target/"
  # Inputs up to 1 MB so that the fixtures are whole seeds; allocations past 2 GB are findings.
  ./build-fuzz/fuzz_"$target" "build-fuzz/corpus/$target" -max_total_time="$seconds" -max_len=1048576 \
    -rss_limit_mb=4096 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$target/"
done

#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite twice: a normal optimised build,
# then a build under AddressSanitizer + UndefinedBehaviorSanitizer (CPU code only; the CUDA
# kernels are compiled in the first build when nvcc is present, and run on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAMBACPP_SANITIZE=ON \
  -DMAMBACPP_CUDA=OFF -DMAMBACPP_BENCH=OFF
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

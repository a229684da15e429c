#!/usr/bin/env bash
# Builds and runs the CUDA code on the GPU machine, in one call each:
#   scripts/gpu/run.sh test    build the library for sm_90 and the GPU tests (tests/cuda) only, run
#                              them, then compute-sanitizer memcheck and racecheck on small sizes
#   scripts/gpu/run.sh bench   build, time the selective scan at the TARGETS.md shapes and against L
#                              (scripts/gpu/scan_bench.cpp), then decode, prefill and training of
#                              whole models through mambacpp; short tables last
#   scripts/gpu/run.sh profile Nsight Compute on one forward and backward (states kept, as in training) at
#                              the first shape, or at PROFILE_SHAPE="BATCH D L"
#   scripts/gpu/run.sh profile-source  Nsight Compute's per-instruction counts and stall samples (source
#                              page, SASS, as CSV in $OUT, summarised by scripts/gpu/sass_summary.py)
#                              and pipe use of the state-group scan kernels at PROFILE_SHAPES ("BATCH
#                              D L" triples separated by commas)
#   scripts/gpu/run.sh all     test and bench
#   scripts/gpu/run.sh test-scan  test, then the scan table only
#   scripts/gpu/run.sh scan-splits  the scan's forward and backward times by forced split count
#   scripts/gpu/run.sh decode [BASE]  only the decode and prefill rows (TARGETS.md's generation table); with BASE,
#                              a source tree of another version (e.g. `git archive` of a commit into
#                              a git-ignored folder named in the call's carry), built beside this one
#                              and run alternately with it in two rounds, so both meet the same machine
#   scripts/gpu/run.sh test-decode [BASE]  test, then decode
#   scripts/gpu/run.sh decode-patches PATCH...  each patch (e.g. docs/perf/m58_*.patch; A.patch+B.patch
#                              for both) applied to this tree in turn: its mambacpp built (only what
#                              it changes recompiles) and tests run against its library
#                              (PATCH_TEST_FILES, default tests/cuda/test_cuda_decode_stack.cpp;
#                              PATCH_TESTS, a gtest filter, default CudaDecodeStack.*; killed, and the
#                              version not timed, after PATCH_TEST_SECONDS, default 180; TIME_FAILED=1
#                              times a version whose tests failed, for probes wrong by design), then the
#                              decode of every version whose tests passed at DECODE_ROWS (default "1.4b 1";
#                              "shape batch" pairs separated by commas) alternately in two rounds;
#                              DECODE_STACK=on|off|auto (default) is passed to bench --decode-stack,
#                              DECODE_PROMPT (default 16) as its prompt length
#   scripts/gpu/run.sh scan-patches PATCH...  the same versions (tests by PATCH_TEST_FILES and
#                              PATCH_TESTS), then each one's scan table (scripts/gpu/scan_bench.cpp),
#                              in two rounds
#   scripts/gpu/run.sh train [BASE]  only the scan table and the bf16 training row; with BASE (as for
#                              decode, holding its scripts/gpu/scan_bench.cpp too) both trees' scan
#                              tables, then their training runs alternately in two rounds
#   scripts/gpu/run.sh test-train [BASE]  test, then train
#   scripts/gpu/run.sh train-sizes  bf16 training of TARGETS.md's three shapes (130m batch 8, 370m batch 4,
#                              1.4b batch 2, sequences of 2048): median tok/s and the GPU's peak memory
#   scripts/gpu/run.sh train-sizes-trace  CUPTI timelines of the 370m and 1.4b training steps of train-sizes
#   scripts/gpu/run.sh decode-trace  CUPTI timelines of the decode rows' recorded steps: each kernel's
#                              time and how far it moves the step's end (its link in the chain)
#   scripts/gpu/run.sh train-profile  ncu times of every kernel of one bf16 training step
#   scripts/gpu/run.sh train-timing  host and GPU times of the phases of a bf16 training step
#   scripts/gpu/run.sh train-trace [BASE]  CUPTI timeline of bf16 training steps: GPU busy time by
#                              kind, idle gaps and what followed them, kernels by time (with BASE,
#                              the same program built against that tree's library too)
#   scripts/gpu/run.sh prefill-trace  CUPTI timelines of the prefill rows (1.4b batch 1, 130m batch 16)
#   scripts/gpu/run.sh context  decode ms per token and peak GPU memory after prompts of 1k to 1M tokens
#                              (130m shape): a table and $OUT/cuda_context.svg
#   scripts/gpu/run.sh decode-products [BASE]  the decode step's products alone, chained in a graph: µs
#                              per call and read rate (scripts/gpu/decode_product_bench.cpp); with BASE
#                              against that tree's library too
#   scripts/gpu/run.sh test-decode-products [BASE]  test, decode-products, then decode
#   scripts/gpu/run.sh gemm-tuning  the same build with MAMBACPP_GEMM_TUNING=0 and 1 alternately, two
#                              rounds: bf16 training (1.4b batch 2, 130m batch 8; 16 steps, median of
#                              steps 5–16) and `mambacpp bench` (1.4b b16, 130m b16, 1.4b b1)
#   scripts/gpu/run.sh cluster-sums  what adding x_proj's partial sums of 16 rows over 128 blocks would
#                              cost a batch-16 decode stack: 64-bit atomics from every block, or
#                              summed within clusters of 8 first (scripts/gpu/cluster_sum_bench.cu)
#   scripts/gpu/run.sh decode-profile  host-side costs of a decode step and ncu times of its kernels
#   scripts/gpu/run.sh transformers  load a checkpoint written by `mambacpp train` (carried in
#                              .gpu_fixtures/ours_tiny) into transformers' MambaForCausalLM and compare
#                              logits with ours (scripts/gpu/check_transformers.py); no build
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

run_transformers() {
  echo "== transformers"
  local fx=.gpu_fixtures
  python3 scripts/gpu/check_transformers.py "$fx/ours_tiny" "$fx/ours_tiny_ids.txt" "$fx/ours_tiny_logits.safetensors" |
    tee "$out/transformers.log"
}

if [ "$mode" = transformers ]; then run_transformers; exit; fi

# The GPU image has OpenBLAS without a pkg-config file and no ICU headers: a stand-in .pc file lets
# CMake find OpenBLAS, and the build goes on without ICU (the tokenizer then encodes ASCII only).
stub_pc="$PWD/$build/pkgconfig"
rm -rf "$stub_pc"
mkdir -p "$stub_pc"
export PKG_CONFIG_PATH="$stub_pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
if ! pkg-config --exists openblas 2>/dev/null; then
  libs=""
  [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] && libs="-lopenblas"
  printf 'Name: openblas\nDescription: stand-in\nVersion: 0\nLibs: %s\nCflags:\n' "$libs" >"$stub_pc/openblas.pc"
  echo "pkg-config: openblas missing, stand-in with '${libs:-no library}'"
fi

# The library and mambacpp of another source tree ($1) in build-gpu-base, for A/B runs.
build_base() {
  local base_build=build-gpu-base
  # A warm machine keeps build-gpu-base from an earlier call, perhaps configured for another tree.
  if [ -f "$base_build/CMakeCache.txt" ] &&
    ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$(realpath "$1")" "$base_build/CMakeCache.txt"; then
    rm -rf "$base_build"
  fi
  if [ ! -f "$base_build/build.ninja" ]; then
    cmake -S "$1" -B "$base_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMAMBACPP_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DMAMBACPP_TESTS=OFF -DMAMBACPP_BENCH=OFF >"$out/cmake_base.log" 2>&1 ||
      { cat "$out/cmake_base.log"; exit 1; }
  fi
  ninja -C "$base_build" -j"$jobs" mambacpp >"$out/build_base.log" 2>&1 || { tail -50 "$out/build_base.log"; exit 1; }
}

# A/B modes build the BASE tree (their second argument) alongside this one. BASE is a source tree
# of another version in a folder that git ignores and the call carries, e.g.
#   mkdir .train_base && git archive <commit> | tar -x -C .train_base
# (`.decode_base/` and `.train_base/` are in .gitignore).
base_build_pid=""
case "$mode" in
  decode | test-decode | train | test-train | train-trace | decode-products | test-decode-products)
    if [ -n "${2:-}" ]; then
      build_base "$2" &
      base_build_pid=$!
    fi
    ;;
esac

# The library and the command-line tool through CMake (sm_90 only); the GPU test and bench programs
# are compiled here against the library's archive.
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMAMBACPP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DMAMBACPP_TESTS=OFF -DMAMBACPP_BENCH=OFF >"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
fi
start=$(date +%s)
ninja -C "$build" -j"$jobs" mambacpp >"$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
echo "library and mambacpp built in $(( $(date +%s) - start )) s"
libs="$build/libmambacpp_lib.a -L$cuda_home/lib64 -lcublasLt -lcublas -lcudart $(pkg-config --libs openblas) -lpthread"
cxx_flags="-std=c++20 -O2 -DMAMBACPP_CUDA -DCUDA_API_PER_THREAD_DEFAULT_STREAM -Isrc -I$cuda_home/include"

run_tests() {
  echo "== tests"
  g++ $cxx_flags tests/cuda/*.cpp -o "$build/cuda_tests" $libs -lgtest -lgtest_main
  "$build/cuda_tests" --gtest_filter='Cuda*' >"$out/test.log" 2>&1 && echo "all GPU tests passed" ||
    echo "GPU TESTS FAILED"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error|Expected|Which is|^\[==" "$out/test.log" | head -60 || true
  local small='CudaSelectiveScan.AllFeaturesSmall:CudaSelectiveScan.NoOptionalInputs'
  small="$small:CudaSelectiveScan.StepMatchesReference:CudaSelectiveScan.StepWithDeltaProjMatchesReference"
  small="$small:CudaCausalConv1d.*"
  small="$small:CudaDecodeStack.MatchesTheLayerByLayerReference"
  small="$small:CudaAddNorm.*:CudaEmbedding.*:CudaLinear.*:CudaInProjectionStep.*:CudaArgmax.*:CudaCrossEntropy.*:CudaOptimizerUpdate.*"
  # racecheck reports shared-memory hazards inside cuBLASLt's own split-K kernel
  # (nvjet_sm90_tss_64x8_64x16_1x1_h_bz_splitK_NNT, 184 of them) for that test's bf16 product over
  # K = 60,000: memcheck runs it, racecheck leaves it out (docs/perf/cuda_model.md, m20-train).
  # racecheck does not follow an mbarrier's byte count, so it reports every read of a slot the
  # decode stack's bulk copies filled as a hazard (1.4M of them): memcheck runs that test only.
  # racecheck runs with MAMBACPP_GEMM_TUNING=0: timing a shape's candidate algorithms runs more of
  # cuBLASLt's kernels, and racecheck reports hazards inside two of them (nvjet_sm90_tst_64x16_…,
  # tst_128x8_…) on the in-projection test's products; the kernels checked here are ours.
  local not_racecheck='-CudaCrossEntropy.RowsLongerThanSharedMemory:CudaDecodeStack.*'
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    local filter="$small"
    [ "$tool" = racecheck ] && filter="$small$not_racecheck"
    local tuning=1
    [ "$tool" = racecheck ] && tuning=0
    if MAMBACPP_GEMM_TUNING=$tuning compute-sanitizer --tool "$tool" --error-exitcode 3 "$build/cuda_tests" --gtest_filter="$filter" \
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
  "$build/scan_bench" "$out/scan_bench.json" ${1:-}
}

# Whole-model numbers through the command-line tool (TARGETS.md's generation and training tables):
# decode and prefill of random bf16 models, a 1,000,000-token prefill, and training steps.
run_model_bench() {
  echo "== model bench"
  local bin="$build/mambacpp" json="$out/model_bench.jsonl"
  : >"$json"
  for shape in 130m 1.4b; do
    for batch in 1 16; do
      "$bin" bench --device cuda --shape "$shape" --dtype bf16 --batch "$batch" -p 2048 -g 128 --reps 3 --json \
        2>>"$out/model_bench.log" >>"$json" || echo "bench $shape batch $batch FAILED"
    done
  done
  "$bin" bench --device cuda --shape 130m --dtype bf16 --batch 1 -p 2048 -g 128 --reps 3 --no-graph --json \
    2>>"$out/model_bench.log" >>"$json" || echo "bench without graph FAILED"
  "$bin" bench --device cuda --shape 130m --dtype bf16 -p 1000000 -g 16 --reps 1 --json 2>>"$out/model_bench.log" \
    >>"$json" || echo "1M-token prefill FAILED"
  # Training: random token ids of the 130m vocabulary, sequence length 2048.
  python3 -c "import numpy as n; n.random.default_rng(1).integers(0, 50277, 20_000_000, dtype=n.uint16).tofile('$out/tokens.u16')"
  for dtype in bf16 f32; do
    rm -rf "$out/train_$dtype"
    "$bin" train --device cuda --dtype "$dtype" --preset 130m --data "$out/tokens.u16" --data-format tokens \
      --vocab 50280 --batch 8 --seq-len 2048 --steps 30 --schedule constant --lr 3e-4 --eval-batches 2 \
      --out "$out/train_$dtype" >"$out/train_$dtype.log" 2>&1 || { echo "training $dtype FAILED"; tail -3 "$out/train_$dtype.log"; }
    rm -f "$out/train_$dtype/model.safetensors" "$out/train_$dtype/train_state.safetensors"
  done
  rm -f "$out/tokens.u16"
  python3 - "$json" "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\nmodel (bf16 weights, H100)  graph  batch  prompt  prefill ms  decode ms/step  decode tok/s")
for r in rows:
    print(f"{r['model']:<26} {str(r.get('cuda_graph', '-')):>6} {r['batch']:>5} {r['prompt_tokens']:>7} "
          f"{r['prefill_ms']:>11.2f} {r['decode_ms_per_step']:>15.3f} {r['decode_tok_s']:>13.0f}")
print("\ntraining, mamba-130m shape, batch 8 x 2048, AdamW (median of steps 6-30)")
for dtype in ("bf16", "f32"):
    try:
        steps = [json.loads(l) for l in open(f"{sys.argv[2]}/train_{dtype}/metrics.jsonl") if '"eval"' not in l]
        rates = [s["tokens_per_s"] for s in steps[5:]]
        rate = statistics.median(rates)
        print(f"  {dtype:>4}: {rate:10.0f} tok/s  {8 * 2048 / rate * 1e3:7.1f} ms/step  (loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f})")
    except (OSError, ValueError, KeyError) as e:
        print(f"  {dtype}: no result ({e})")
PY
}

# Sets the caller's `trees`: this tree alone, or with a BASE tree (once its build is done) the base
# first, then this one.
choose_trees() {
  trees=(new)
  if [ -n "${1:-}" ]; then
    wait "$base_build_pid" || exit 1
    trees=(base new)
  fi
}

# Scan table and bf16 training (batch 8 x 2048, 30 steps; TRAIN_ROWS="370m 4" for another shape and
# batch) of this tree, and with BASE of that tree too: the training runs alternate between the trees
# in two rounds, so both meet the same machine.
run_train() {
  echo "== train"
  local base_src=${1:-} trees
  choose_trees "$base_src"
  for tree in "${trees[@]}"; do
    local root=.
    [ "$tree" = base ] && root=$base_src
    local lib=$build/libmambacpp_lib.a
    [ "$tree" = base ] && lib=build-gpu-base/libmambacpp_lib.a
    echo "-- scan table, $tree"
    # $libs without its first word (this tree's library), after the tree's own one.
    g++ ${cxx_flags/-Isrc/-I$root/src} "$root/scripts/gpu/scan_bench.cpp" -o "$build/scan_bench_$tree" "$lib" ${libs#* }
    "$build/scan_bench_$tree" "$out/scan_bench_$tree.json"
  done
  python3 -c "import numpy as n; n.random.default_rng(1).integers(0, 50277, 20_000_000, dtype=n.uint16).tofile('$out/tokens.u16')"
  local rows=${TRAIN_ROWS:-130m 8}
  set -- $rows
  local shape=$1 batch=$2
  for round in 1 2; do
    local order=("${trees[@]}")
    [ "$round" = 2 ] && order=($(printf '%s\n' "${trees[@]}" | tac))
    for tree in "${order[@]}"; do
      local bin="$build/mambacpp" dir="$out/train_${tree}_$round"
      [ "$tree" = base ] && bin="build-gpu-base/mambacpp"
      rm -rf "$dir"
      "$bin" train --device cuda --dtype bf16 --preset "$shape" --data "$out/tokens.u16" --data-format tokens \
        --vocab 50280 --batch "$batch" --seq-len 2048 --steps 30 --schedule constant --lr 3e-4 --eval-batches 2 \
        --out "$dir" >"$dir.log" 2>&1 || { echo "training $tree FAILED"; tail -3 "$dir.log"; }
      rm -f "$dir/model.safetensors" "$dir/train_state.safetensors"
    done
  done
  rm -f "$out/tokens.u16"
  python3 - "$out" "$shape" "$batch" <<'PY'
import glob, json, statistics, sys
shape, batch = sys.argv[2], int(sys.argv[3])
print(f"\ntraining bf16, mamba-{shape} shape, batch {batch} x 2048, AdamW: median tok/s of steps 6-30 (loss first -> last)")
for path in sorted(glob.glob(f"{sys.argv[1]}/train_*_*/metrics.jsonl")):
    steps = [json.loads(l) for l in open(path) if '"eval"' not in l]
    rate = statistics.median(s["tokens_per_s"] for s in steps[5:])
    print(f"  {path.split('/')[-2]:<14} {rate:10.0f} tok/s {batch * 2048 / rate * 1e3:7.1f} ms/step"
          f"  (loss {steps[0]['loss']:.4f} -> {steps[-1]['loss']:.4f})")
PY
}

# TARGETS.md's training table: bf16 (float32 master weights), AdamW, sequences of 2048, 30 steps of
# random token ids per shape. Checkpoints go to /dev/shm (the 1.4b one with its optimiser state is
# 16 GB) and are deleted; nvidia-smi samples the memory in use meanwhile.
run_train_sizes() {
  echo "== train sizes"
  python3 -c "import numpy as n; n.random.default_rng(1).integers(0, 50277, 20_000_000, dtype=n.uint16).tofile('$out/tokens.u16')"
  local scratch=/dev/shm/mambacpp_train_sizes
  for row in "130m 8" "370m 4" "1.4b 2"; do
    set -- $row
    local dir="$scratch/$1"
    rm -rf "$dir"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$out/train_memory_$1.txt" &
    local sampler=$!
    "$build/mambacpp" train --device cuda --dtype bf16 --preset "$1" --data "$out/tokens.u16" --data-format tokens \
      --vocab 50280 --batch "$2" --seq-len 2048 --steps 30 --schedule constant --lr 3e-4 --eval-batches 1 \
      --out "$dir" >"$out/train_$1.log" 2>&1 || { echo "training $1 FAILED"; tail -3 "$out/train_$1.log"; }
    kill "$sampler" 2>/dev/null || true  # nvidia-smi may have stopped by itself
    cp "$dir/metrics.jsonl" "$out/train_$1.jsonl" || true
    rm -rf "$dir"
  done
  rm -f "$out/tokens.u16"
  python3 - "$out" <<'PY'
import json, statistics, sys
print("\ntraining bf16, AdamW, sequences of 2048: median of steps 6-30 (loss first -> last), peak GPU memory")
for shape, batch in (("130m", 8), ("370m", 4), ("1.4b", 2)):
    try:
        steps = [json.loads(l) for l in open(f"{sys.argv[1]}/train_{shape}.jsonl") if '"eval"' not in l]
        rate = statistics.median(s["tokens_per_s"] for s in steps[5:])
        memory = max(int(l) for l in open(f"{sys.argv[1]}/train_memory_{shape}.txt") if l.strip().isdigit())
        print(f"  {shape:>5} batch {batch}: {rate:9.0f} tok/s {batch * 2048 / rate * 1e3:7.1f} ms/step"
              f"  (loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}), {memory / 1024:.1f} GiB")
    except (OSError, ValueError, KeyError) as e:
        print(f"  {shape}: no result ({e})")
PY
}

# Decode rows: mamba-130m and 1.4b shapes, batch 1 and 16, bf16, prompt 2048, 128 new tokens.
run_decode() {
  echo "== decode"
  local base_src=${1:-} trees
  choose_trees "$base_src"
  local json="$out/decode.jsonl"
  : >"$json"
  for round in 1 2; do
    for shape in 130m 1.4b; do
      for batch in 1 16; do
        local order=("${trees[@]}")
        [ "$round" = 2 ] && order=($(printf '%s\n' "${trees[@]}" | tac))
        for tree in "${order[@]}"; do
          local bin="$build/mambacpp"
          [ "$tree" = base ] && bin="build-gpu-base/mambacpp"
          "$bin" bench --device cuda --shape "$shape" --dtype bf16 --batch "$batch" -p 2048 -g 128 --reps 3 --json \
            2>>"$out/decode.log" | python3 -c "import json,sys; r=json.load(sys.stdin); r['tree']='$tree'; r['round']=$round; print(json.dumps(r))" \
            >>"$json" || echo "decode $tree $shape batch $batch FAILED"
        done
      done
    done
  done
  decode_table "$json" "bf16, prompt 2048, 128 tokens, median of 3"
}

# The decode and prefill rows of $1 (JSON lines of `mambacpp bench`, each with its tree and round):
# a line a shape and batch, every tree's rounds in the order the trees first appear.
decode_table() {
  python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = sorted({(r['model'], r['batch']) for r in rows}, key=lambda k: (k[0], k[1]))
trees = list(dict.fromkeys(r['tree'] for r in rows))
for key, title in (('decode_ms_per_step', 'decode ms/step'), ('prefill_ms', 'prefill ms')):
    print(f"\n{title} ({sys.argv[2]})   round 1 / round 2")
    for model, batch in keys:
        cells = []
        for tree in trees:
            v = [r[key] for r in rows if r['model'] == model and r['batch'] == batch and r['tree'] == tree]
            if v: cells.append(f"{tree} " + " / ".join(f"{x:.3f}" for x in v))
        print(f"{model:<28} b{batch:<3} " + "   ".join(cells))
PY
}

# `patch -p1` where the machine has it, else `git apply` (which also works outside a repository);
# $1: apply, check or revert.
apply_patch() {
  local action=$1 file=$2
  if command -v patch >/dev/null; then
    case "$action" in
      apply) patch -p1 -s --no-backup-if-mismatch <"$file" ;;
      check) patch -p1 -s --dry-run <"$file" >/dev/null ;;
      revert) patch -p1 -s -R --no-backup-if-mismatch <"$file" ;;
    esac
  else
    case "$action" in
      apply) git apply "$file" ;;
      check) git apply --check "$file" ;;
      revert) git apply -R "$file" ;;
    esac
  fi
}

# Versions of this tree made by patches (arguments; A.patch+B.patch for both applied): each built in
# turn in this tree (only what it changes recompiles), its mambacpp and library kept as
# $build/mambacpp-NAME and $build/lib-NAME.a, tests run against it (PATCH_TEST_FILES, PATCH_TESTS),
# the tree restored. Fills `versions` with "main" and the names that built.
build_versions() {
  versions=(main)
  cp "$build/mambacpp" "$build/mambacpp-main"
  cp "$build/libmambacpp_lib.a" "$build/lib-main.a"
  local version name
  for version in "$@"; do
    local files=() applied=() file ok=1
    IFS=+ read -ra files <<<"$version"
    name=""
    for file in "${files[@]}"; do name+="${name:++}$(basename "$file" .patch)"; done
    for file in "${files[@]}"; do
      if apply_patch check "$file"; then
        apply_patch apply "$file"
        applied=("$file" "${applied[@]}")
      else
        echo "$name: $file does not apply"; ok=0; break
      fi
    done
    if [ "$ok" = 1 ] && ninja -C "$build" -j"$jobs" mambacpp >"$out/build_$name.log" 2>&1; then
      cp "$build/mambacpp" "$build/mambacpp-$name"
      cp "$build/libmambacpp_lib.a" "$build/lib-$name.a"
      # Only a version whose tests pass is timed. A version that hangs (a kernel waiting on a barrier
      # nothing will complete) fails its tests after PATCH_TEST_SECONDS instead of taking the call.
      if g++ $cxx_flags ${PATCH_TEST_FILES:-tests/cuda/test_cuda_decode_stack.cpp} -o "$build/patch_tests" $libs \
        -lgtest -lgtest_main >"$build/tests_$name.log" 2>&1 &&
        timeout "${PATCH_TEST_SECONDS:-180}" "$build/patch_tests" --gtest_filter="${PATCH_TESTS:-CudaDecodeStack.*}" \
          >>"$build/tests_$name.log" 2>&1; then
        versions+=("$name")
      elif [ -n "${TIME_FAILED:-}" ]; then  # a timing probe whose results are wrong by design
        echo "$name: tests FAILED, timed anyway (TIME_FAILED)"
        versions+=("$name")
      else
        echo "$name: tests FAILED, not timed"
      fi
      # sed reads to the end: an early-closing reader (head) would fail the pipe and the script.
      grep -E "^\[  (PASSED|FAILED) |Failure|off the reference|error" "$build/tests_$name.log" |
        sed -n "1,40s/^/$name: /p" || true
    elif [ "$ok" = 1 ]; then
      echo "$name: build failed"; tail -20 "$out/build_$name.log"
    fi
    for file in "${applied[@]}"; do apply_patch revert "$file"; done
  done
  ninja -C "$build" -j"$jobs" mambacpp >/dev/null
}

# The patched versions' decode rows (DECODE_ROWS, DECODE_STACK), alternating in two rounds.
run_decode_patches() {
  echo "== decode patches"
  local versions name json="$out/decode_patches.jsonl"
  build_versions "$@"
  : >"$json"
  local rows=${DECODE_ROWS:-1.4b 1} row prompt=${DECODE_PROMPT:-16}
  for round in 1 2; do
    local order=("${versions[@]}")
    [ "$round" = 2 ] && order=($(printf '%s\n' "${versions[@]}" | tac))
    IFS=, read -ra row_list <<<"$rows"
    for row in "${row_list[@]}"; do
      read -r shape batch <<<"$row"
      for name in "${order[@]}"; do
        "$build/mambacpp-$name" bench --device cuda --shape "$shape" --dtype bf16 --batch "$batch" -p "$prompt" -g 128 \
          --reps 3 --decode-stack "${DECODE_STACK:-auto}" --json 2>>"$out/decode.log" |
          python3 -c "import json,sys; r=json.load(sys.stdin); r['tree']='$name'; r['round']=$round; print(json.dumps(r))" \
          >>"$json" || echo "decode $name $shape batch $batch FAILED"
      done
    done
  done
  decode_table "$json" "bf16, prompt $prompt, 128 tokens, median of 3"
}

# The patched versions' scan tables (scripts/gpu/scan_bench.cpp against each version's library), in
# two rounds, the second in reverse order.
run_scan_patches() {
  echo "== scan patches"
  local versions name
  build_versions "$@"
  for name in "${versions[@]}"; do
    # $libs without its first word (this tree's library), after the version's own one.
    g++ $cxx_flags scripts/gpu/scan_bench.cpp -o "$build/scan_bench-$name" "$build/lib-$name.a" ${libs#* }
  done
  for round in 1 2; do
    local order=("${versions[@]}")
    [ "$round" = 2 ] && order=($(printf '%s\n' "${versions[@]}" | tac))
    for name in "${order[@]}"; do
      echo "-- scan table, $name, round $round"
      "$build/scan_bench-$name" "$out/scan_bench_${name}_$round.json"
    done
  done
}

# Decode after prompts of 1k to 1M tokens (mamba-130m shape, bf16, batch 1): ms per token and peak
# GPU memory (nvidia-smi, sampled every 200 ms) against context, a table and $out/cuda_context.svg.
run_context() {
  echo "== context"
  local points="" c
  printf '%10s %12s %16s %10s %16s\n' context "prefill ms" "decode ms/token" "state MiB" "peak GPU MiB"
  for c in 1000 10000 100000 1000000; do
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$out/context_memory_$c.txt" &
    local sampler=$!
    if ! "$build/mambacpp" bench --device cuda --shape 130m --dtype bf16 -p "$c" -g 128 --reps 1 --json \
      >"$out/context_$c.json" 2>>"$out/context.log"; then
      kill "$sampler" 2>/dev/null || true  # nvidia-smi may have stopped by itself
      echo "context $c FAILED: $(tail -1 "$out/context.log")"
      continue
    fi
    kill "$sampler" 2>/dev/null || true  # nvidia-smi may have stopped by itself
    local row
    if ! row=$(python3 - "$out/context_$c.json" "$out/context_memory_$c.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
samples = [int(l) for l in open(sys.argv[2]) if l.strip().isdigit()]
if not samples:
    sys.exit(f"no GPU memory samples from nvidia-smi in {sys.argv[2]}")
memory = max(samples)
print(r["prompt_tokens"], f'{r["prefill_ms"]:.1f}', f'{r["decode_ms_per_step"]:.3f}', f'{r["state_mib"]:.2f}', memory)
PY
    ); then
      echo "context $c FAILED (its JSON or memory samples: see the line above)"
      continue
    fi
    set -- $row
    printf '%10s %12s %16s %10s %16s\n' "$1" "$2" "$3" "$4" "$5"
    points+="$1 $3 $5"$'\n'
  done
  awk -v title="mamba-130m on one H100: decode time and memory do not grow with context" \
    -v memory="peak GPU memory MiB" -f scripts/plot_context.awk <<<"$points" >"$out/cuda_context.svg"
}

# The decode step's products alone (scripts/gpu/decode_product_bench.cpp): µs per call and read
# rate; with BASE the same program against that tree's library too, alternately in two rounds.
run_decode_products() {
  echo "== decode products"
  local base_src=${1:-} trees
  choose_trees "$base_src"
  for tree in "${trees[@]}"; do
    local lib=$build/libmambacpp_lib.a
    [ "$tree" = base ] && lib=build-gpu-base/libmambacpp_lib.a
    g++ $cxx_flags scripts/gpu/decode_product_bench.cpp -o "$build/decode_product_bench_$tree" "$lib" ${libs#* }
  done
  for round in 1 2; do
    for tree in "${trees[@]}"; do
      echo "-- $tree, round $round"
      "$build/decode_product_bench_$tree" | tee "$out/decode_products_${tree}_$round.txt"
    done
  done
}

# cuBLASLt's first suggestion (MAMBACPP_GEMM_TUNING=0) against its timed candidates (1), alternately.
run_gemm_tuning() {
  echo "== gemm tuning"
  python3 -c "import numpy as n; n.random.default_rng(1).integers(0, 50277, 3_000_000, dtype=n.uint16).tofile('$out/tokens.u16')"
  local dir=/dev/shm/mambacpp_gemm_tuning
  for round in 1 2; do
    for tuning in 0 1; do
      for row in "1.4b 2" "130m 8"; do
        set -- $row
        rm -rf "$dir"
        MAMBACPP_GEMM_TUNING=$tuning "$build/mambacpp" train --device cuda --dtype bf16 --preset "$1" \
          --data "$out/tokens.u16" --data-format tokens --vocab 50280 --batch "$2" --seq-len 2048 --steps 16 \
          --schedule constant --lr 3e-4 --eval-batches 1 --out "$dir" >"$out/tuning_train.log" 2>&1 ||
          { echo "training $1 FAILED"; tail -3 "$out/tuning_train.log"; continue; }
        python3 - "$dir/metrics.jsonl" "train $1 b$2 tuning $tuning round $round" <<'PY'
import json, statistics, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"eval"' not in l]
print(f"{sys.argv[2]}: {statistics.median(s['tokens_per_s'] for s in steps[4:]):.0f} tok/s")
PY
      done
      for row in "1.4b 16" "130m 16" "1.4b 1"; do
        set -- $row
        MAMBACPP_GEMM_TUNING=$tuning "$build/mambacpp" bench --device cuda --shape "$1" --dtype bf16 --batch "$2" \
          -p 2048 -g 128 --reps 3 --json 2>>"$out/tuning_bench.log" | python3 -c "import json, sys; r = json.load(sys.stdin)
print('bench $1 b$2 tuning $tuning round $round: decode %.3f ms, prefill %.2f ms' % (r['decode_ms_per_step'], r['prefill_ms']))" ||
          echo "bench $1 b$2 FAILED"
      done
    done
  done
  rm -rf "$dir" "$out/tokens.u16"
}

# Decode step breakdown (scripts/gpu/decode_profile.cpp): host-side costs, then each kernel of one
# recorded step under ncu (kernel durations, serialised: no launch overlap).
run_decode_profile() {
  echo "== decode profile"
  g++ $cxx_flags scripts/gpu/decode_profile.cpp -o "$build/decode_profile" $libs
  for row in "130m 1" "130m 16" "1.4b 1" "1.4b 16"; do "$build/decode_profile" $row; done
  for row in "130m 1" "130m 16" "1.4b 16"; do
    local name=${row// /_}
    ncu --profile-from-start off --graph-profiling node --cache-control none --clock-control none \
      --metrics gpu__time_duration.sum --csv "$build/decode_profile" $row >"$out/ncu_$name.csv" 2>"$out/ncu_$name.log" ||
      tail -5 "$out/ncu_$name.log"
    python3 scripts/gpu/ncu_kernel_table.py "$out/ncu_$name.csv" "$row" --steps 2
  done
}

# Host and GPU times of the phases of a bf16 training step (scripts/gpu/train_timing.cpp).
run_train_timing() {
  echo "== train timing"
  g++ $cxx_flags scripts/gpu/train_timing.cpp -o "$build/train_timing" $libs
  "$build/train_timing" 13
}

# Sets the caller's `cupti` to the folder holding libcupti; fails with a message if there is none.
find_cupti() {
  cupti=$( (find -L "$cuda_home/lib64" "$cuda_home/extras/CUPTI/lib64" "$cuda_home/targets/x86_64-linux/lib" \
    /usr/local/lib/python3*/dist-packages/nvidia -maxdepth 3 -name 'libcupti.so*' 2>/dev/null || true) | head -1)
  [ -n "$cupti" ] || { echo "no libcupti under $cuda_home or Python's nvidia packages"; return 1; }
  cupti=$(dirname "$cupti")
}

# CUPTI timeline of training steps (scripts/gpu/train_trace.cpp), of this tree and of BASE's library.
run_train_trace() {
  echo "== train trace"
  local base_src=${1:-} trees cupti
  find_cupti || return 0
  choose_trees "$base_src"
  for tree in "${trees[@]}"; do
    local root=. lib=$build/libmambacpp_lib.a
    [ "$tree" = base ] && root=$base_src && lib=build-gpu-base/libmambacpp_lib.a
    g++ ${cxx_flags/-Isrc/-I$root/src} scripts/gpu/train_trace.cpp -o "$build/train_trace_$tree" "$lib" ${libs#* } \
      -L"$cupti" -lcupti -Wl,-rpath,"$cupti"
    echo "-- $tree"
    "$build/train_trace_$tree" 8 | tee "$out/train_trace_$tree.txt"
    if [ "$tree" = new ]; then
      echo "-- $tree, eager passes"
      "$build/train_trace_$tree" 8 eager | tee "$out/train_trace_${tree}_eager.txt"
    fi
  done
}

# CUPTI timelines (scripts/gpu/train_trace.cpp) of prefills or training steps ($1: prefill | train) of
# the shapes and batches that follow, bf16, 2048 tokens a sequence.
run_shape_traces() {
  local kind=$1
  shift
  echo "== $kind trace"
  local cupti
  find_cupti || return 0
  g++ $cxx_flags scripts/gpu/train_trace.cpp -o "$build/train_trace" $libs -L"$cupti" -lcupti -Wl,-rpath,"$cupti"
  for row in "$@"; do
    "$build/train_trace" "$kind" $row | tee "$out/${kind}_trace_${row// /_}.txt"
  done
}

# ncu times of every kernel of the second step of `mambacpp train` (bf16, 130m shape, batch 8 x 2048):
# the steps are told apart by their first kernel, the embedding's.
run_train_profile() {
  echo "== train profile"
  python3 -c "import numpy as n; n.random.default_rng(1).integers(0, 50277, 2_000_000, dtype=n.uint16).tofile('$out/tokens.u16')"
  rm -rf "$out/train_profile"
  ncu --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
    "$build/mambacpp" train --device cuda --dtype bf16 --preset 130m --data "$out/tokens.u16" --data-format tokens \
    --vocab 50280 --batch 8 --seq-len 2048 --steps 2 --schedule constant --lr 3e-4 --eval-batches 1 \
    --out "$out/train_profile" >"$out/ncu_train.csv" 2>"$out/ncu_train.log" || tail -5 "$out/ncu_train.log"
  rm -rf "$out/tokens.u16" "$out/train_profile"
  python3 scripts/gpu/ncu_kernel_table.py "$out/ncu_train.csv" "training step 2" --segment embedding_forward 2
}

run_profile() {
  echo "== ncu"
  g++ $cxx_flags scripts/gpu/scan_bench.cpp -o "$build/scan_bench" $libs
  ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    -k regex:scan_ "$build/scan_bench" "$out/profile.json" --profile ${PROFILE_SHAPE:-} >"$out/ncu.txt" 2>&1 ||
    tail -20 "$out/ncu.txt"
  grep -E "scan_|Duration|Throughput|Warp Cycles Per Issued|Stall|Achieved Occupancy|Registers Per|Issue Slots|Eligible|No Eligible|Block Limit|Executed Ipc|L1/TEX Hit|L2 Hit|Bank" \
    "$out/ncu.txt" | cut -c1-150 | head -120
}

run_profile_source() {
  echo "== ncu source counters"
  g++ $cxx_flags scripts/gpu/scan_bench.cpp -o "$build/scan_bench" $libs
  # MUFU (xu) use is not a counter here: its warp instructions over 0.5 a clock per SM give it.
  local pipes=sm__inst_executed_pipe_xu.sum
  pipes=$pipes,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active
  pipes=$pipes,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__cycles_elapsed.avg.per_second
  pipes=$pipes,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum
  pipes=$pipes,smsp__warps_active.avg.per_cycle_active,gpu__time_duration.sum
  local i=0
  IFS=',' read -ra shapes <<<"${PROFILE_SHAPES:-4 4096 2048}"
  for shape in "${shapes[@]}"; do
    i=$((i + 1))
    ncu --section SourceCounters --section WarpStateStats --metrics "$pipes" -k regex:scan_group -o "$out/src$i" \
      "$build/scan_bench" "$out/profile.json" --profile $shape >"$out/ncu_src$i.log" 2>&1 || tail -20 "$out/ncu_src$i.log"
    echo "-- shape $shape"
    ncu -i "$out/src$i.ncu-rep" --page raw --csv --metrics "$pipes" 2>/dev/null | cut -c1-2000
    ncu -i "$out/src$i.ncu-rep" --page details --section WarpStateStats 2>/dev/null | grep -E "scan_group|Stall|Warp Cycles" | cut -c1-150
    ncu -i "$out/src$i.ncu-rep" --page source --csv --print-source sass >"$out/sass$i.csv" 2>&1 || true
    python3 scripts/gpu/sass_summary.py "$out/sass$i.csv" --top 8 || true
    rm -f "$out/src$i.ncu-rep"
  done
}

case "$mode" in
  test) run_tests ;;
  bench) run_bench; run_model_bench ;;
  profile) run_profile ;;
  profile-source) run_profile_source ;;
  all) run_tests; run_bench; run_model_bench ;;
  test-scan) run_tests; run_bench ;;
  scan-splits) run_bench --splits ;;
  decode) run_decode "${2:-}" ;;
  decode-profile) run_decode_profile ;;
  decode-products) run_decode_products "${2:-}" ;;
  test-decode-products) run_tests; run_decode_products "${2:-}"; run_decode "${2:-}" ;;
  test-decode) run_tests; run_decode "${2:-}" ;;
  decode-patches) shift; run_decode_patches "$@" ;;
  scan-patches) shift; run_scan_patches "$@" ;;
  train) run_train "${2:-}" ;;
  test-train) run_tests; run_train "${2:-}" ;;
  train-sizes) run_train_sizes ;;
  train-profile) run_train_profile ;;
  train-timing) run_train_timing ;;
  train-trace) run_train_trace "${2:-}" ;;
  prefill-trace) run_shape_traces prefill "1.4b 1" "130m 16" ;;
  train-sizes-trace) run_shape_traces train "370m 4" "1.4b 2" ;;
  decode-trace) run_shape_traces decode "130m 1" "130m 16" "1.4b 1" "1.4b 16" ;;
  context) run_context ;;
  gemm-tuning) run_gemm_tuning ;;
  cluster-sums)
    "$cuda_home/bin/nvcc" -std=c++20 -O3 -arch=sm_90 scripts/gpu/cluster_sum_bench.cu -o "$build/cluster_sum_bench"
    "$build/cluster_sum_bench" ;;
  *) echo "usage: scripts/gpu/run.sh test|test-scan|bench|profile|profile-source|all|scan-splits|decode [BASE]|test-decode [BASE]|decode-profile|decode-products [BASE]|test-decode-products [BASE]|decode-trace|prefill-trace|decode-patches PATCH...|scan-patches PATCH...|train [BASE]|test-train [BASE]|train-sizes|train-sizes-trace|train-profile|train-timing|train-trace [BASE]|context|gemm-tuning|cluster-sums|transformers" >&2
    exit 2 ;;
esac

// Matrix products of the CPU backend: float32 activations (row-major) times a weight W [N, K]
// (the PyTorch layout) of dtype f32, bf16 or f16, accumulating in float32.
//
// Few rows (decode, batched decode; training micro-batches with 16-bit weights) run a
// hand-written AVX-512 kernel that streams W from memory exactly once, threaded over output rows. Larger M calls the
// BLAS sgemm; 16-bit weights are widened to float32 one panel of rows at a time (memory matters: no cached float32 copy
// of W). Threads: our pool splits the output into num_threads() slices and each slice is one single-threaded BLAS call,
// so the thread count is exactly --threads and no BLAS worker threads spin against our pool (docs/perf/cpu_gemm.md has
// the measurements).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mamba::ops::cpu {

// y[m, n] = Σ_k x[m, k]·W[n, k] for m < M, n < N (x row stride K, y row stride ldy).
void gemm_x_wt(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy);
// dx[m, k] = Σ_n dy[m, n]·W[n, k] (dy row stride ldy, dx row stride K).
void gemm_dy_w(const float* dy, int64_t M, int64_t ldy, const Tensor& weight, float* dx);
// dW[n, k] += Σ_m dy[m, n]·x[m, k] for dW [N, K] f32 (dy row stride ldy, x row stride K).
void gemm_accumulate_dyt_x(const float* dy, int64_t M, int64_t ldy, const float* x, int64_t N, int64_t K, float* dW);

// Which product gemm_x_wt uses (measured in docs/perf/cpu_gemm.md): the streaming kernel for
// M ≤ 8, and for 16-bit weights up to M = 64 (it widens in registers, while the BLAS path must
// widen panels to memory first) unless K is so short that its per-output reductions dominate.
inline bool use_streaming_kernel(int64_t M, int64_t K, DType weight_dtype) {
  return M <= 8 || (weight_dtype != DType::f32 && M <= 64 && K >= 256);
}

}  // namespace mamba::ops::cpu

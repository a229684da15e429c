// Matrix products of the CPU backend: float32 activations (row-major) times a weight W [N, K]
// (the PyTorch layout) of dtype f32, bf16 or f16, accumulating in float32.
//
// M ≤ 8 rows (decode, batched decode) run a hand-written kernel that streams W exactly once,
// threaded over output rows. Larger M calls the BLAS sgemm; 16-bit weights are widened to
// float32 one panel of rows at a time (memory matters: no cached float32 copy of W).
// The BLAS library runs with num_threads() threads; our own pool is idle while it runs.
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

// Largest M the streaming (read W once) kernel handles.
inline constexpr int64_t kStreamingMaxRows = 8;

}  // namespace mamba::ops::cpu

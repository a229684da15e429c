// Matrix products of the CPU backend: float32 activations (row-major) times a weight W [N, K]
// (the PyTorch layout) of dtype f32, bf16 or f16, accumulating in float32.
//
// Few rows (decode, batched decode; up to 64 rows with 16-bit weights) run a hand-written AVX-512
// kernel that streams W from memory exactly once, 16 weight rows at a time, in chunks handed to
// whichever thread is free. More rows (prefill, training) run an AVX-512 register-tiled kernel:
// 32 columns of the second operand packed per panel (16-bit weights widened while packing, no
// float32 copy of W is ever kept), tiles of 12 rows × 32 columns held in registers. Machines
// without AVX-512 call the BLAS sgemm instead, one single-threaded call per slice of our pool, so
// the thread count is exactly --threads (docs/perf/cpu_gemm.md and cpu_model.md have the
// measurements). W may have padded rows (Tensor::row_stride): every path steps rows by it.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mamba::ops::cpu {

// y[m, n] = Σ_k x[m, k]·W[n, k] for m < M, n < N (x row stride K, y row stride ldy).
void gemm_x_wt(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy);
// Weight rows per chunk of the streaming product for M rows of x, which threads take one at a
// time (up to 1 MiB for one pass of x rows, 256 KiB for more).
int64_t stream_chunk_rows(const Tensor& weight, int64_t M);
// Columns [n0, n1) of that product on the calling thread, with the streaming kernel (any M; meant
// for decode's few rows): for ops that compute a slice of a product inside their own pool run.
void stream_x_wt_rows(const float* x, int64_t M, const Tensor& weight, int64_t n0, int64_t n1, float* y, int64_t ldy);
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

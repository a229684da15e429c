// The product of decode steps: y = x·Wᵀ (+ b) for at most 16 rows of bf16 x and a bf16 weight
// W [n, k], reading W once for all rows on the tensor cores, in one kernel with the work around
// it that would otherwise be kernels of its own:
//   - before the product, optionally the residual add + RMSNorm of ops/norm.h (x is then the
//     block input, and the kernel writes s = x + residual as residual_out): the product is taken
//     of s ⊙ norm_weight rounded to bf16 and its sums scaled by each row's 1/rms, so that the
//     staging needs no row sum before it stores;
//   - after it, the columns go to up to three output tensors (split_columns without copies), and
//     optionally the first one's columns pass through the causal conv step of ops/causal_conv1d.h
//     with SiLU (its columns are the channels).
// Launched as an overlapping kernel (common.cuh): the first weight loads are issued before it
// waits for the kernel before it, which therefore must not write W. Kernels that may write weights
// (conversions, optimiser updates) never allow an early launch, so they have finished first.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace mamba::ops::cuda_detail {

constexpr int kDecodeMaxRows = 16;
constexpr int kDecodeMaxPieces = 3;

struct DecodeMatvecArgs {
  const __nv_bfloat16* x = nullptr;  // [rows, k]
  int rows = 0, k = 0;
  const __nv_bfloat16* weight = nullptr;  // [n, k]
  int n = 0;
  const float* bias = nullptr;  // [n], optional
  // Pre-norm: with norm_weight set, the product reads RMSNorm(x + residual) ⊙ norm_weight.
  const float* residual = nullptr;     // [rows, k] f32, optional
  const float* norm_weight = nullptr;  // [k] f32
  float eps = 1e-5f;
  float* residual_out = nullptr;  // [rows, k] f32: x + residual (pre-norm only)
  // Output pieces: piece p holds columns [piece_begin[p], piece_begin[p + 1]) as [rows, width].
  int pieces = 1;
  __nv_bfloat16* out[kDecodeMaxPieces] = {};
  int piece_begin[kDecodeMaxPieces + 1] = {};
  // Causal conv step on piece 0: state [rows, piece-0 width, conv_width − 1] shifted in place.
  float* conv_state = nullptr;
  const float* conv_weight = nullptr;  // [piece-0 width, conv_width]
  const float* conv_bias = nullptr;    // optional
  int conv_width = 0;
};

// Whether decode_matvec takes a product of these sizes (rows ≤ 16, k a multiple of 8, x and W
// 16-byte aligned, the staged rows fitting in shared memory) and is the faster path for it: above
// 4 rows only for weights of at most kDecodeLargeWeight elements and rows of at most
// kDecodeLongestRowAbove4 positions. Each block then stages all rows and walks its column tiles
// about one round trip at a time: for the larger products of the 1.4b shape at batch 16 cuBLASLt
// was faster (docs/perf/cuda_model.md, m9), and so for its x_proj (k 4096, 20 blocks each staging
// 128 KB of x: m27).
constexpr int64_t kDecodeLargeWeight = int64_t(4) << 20;
constexpr int64_t kDecodeLongestRowAbove4 = 2048;
// With a conv step on the first `conv_channels` columns, also whether each block's share of them
// fits the shared memory the kernel keeps them in until its last tile.
bool decode_matvec_fits(int64_t rows, int64_t k, int64_t n, const void* x, const void* weight,
                        int64_t conv_channels = 0);
void decode_matvec(const DecodeMatvecArgs& args);

}  // namespace mamba::ops::cuda_detail

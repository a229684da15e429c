// The input side of one Mamba-1 decode step: the block's residual add + RMSNorm, the in-projection
// and the causal conv step of its x half, for a batch of sequences (one token each).
//
//   s            = x + residual                         (residual optional; s float32)
//   n            = s / sqrt(mean(s²) + eps) ⊙ w_norm    (ops/norm.h, NormKind::rms)
//   [x' | z]     = n · W_inᵀ + b_in                     (W_in [2C, d]; ops/linear.h)
//   x_conv       = SiLU(causal_conv1d_step(x', conv_state))   (ops/causal_conv1d.h; state shifted in place)
//
// It computes add_norm_forward → linear_forward_split → causal_conv1d_step, and runs as those ops
// wherever a fused path does not apply. On CUDA, bf16 x with a bf16 W_in and at most 16 sequences
// run as one kernel where decode_matvec_fits (ops/cuda/decode_matvec.cuh: above 4 sequences only
// for W_in of at most 4M elements): the decode step is a chain of latency-bound kernels, and this
// one replaces three. It stages s ⊙ w_norm rounded to bf16 and scales the product's float32 sums by
// the row's 1/sqrt(mean(s²) + eps) (the same value in exact arithmetic; the separate ops round n
// itself, so the two differ in n's last bf16 bit), and rounds x' to bf16 before the conv step as
// the ops store it. Other CUDA inputs of up to kOneProductCudaRows sequences (the 1.4b shape at
// batch 16) run as the norm, one product, and one kernel for the conv step of the x half and the
// copy of the z half: the ops exactly, with one launch fewer. On the CPU, the products of the
// streaming kernel (few sequences, ops/cpu/gemm.h) run with the conv step in one pool run, bitwise
// equal to the ops.
#pragma once
#include <optional>

#include "core/tensor.h"
#include "ops/norm.h"

namespace mamba::ops {

struct InProjectionStep {
  NormInputs norm;     // x [batch, d] (the block input), residual [batch, d] f32 optional, weight [d]
  Tensor weight;       // W_in [2C, d]
  Tensor bias;         // [2C], optional
  Tensor conv_weight;  // [C, K] (or the checkpoint's [C, 1, K])
  Tensor conv_bias;    // [C], optional
};

struct InProjectionOutputs {
  Tensor x_conv;        // [batch, C], dtype of x
  Tensor z;             // [batch, C], dtype of x
  Tensor residual_out;  // [batch, d] f32: s
};

// Validates every input with messages naming the tensor; conv_state is [batch, C, K−1] f32.
void check_in_projection_step_inputs(const InProjectionStep& in, const Tensor& conv_state);
InProjectionOutputs in_projection_step(const InProjectionStep& in, Tensor& conv_state);

namespace cpu {
// The fused path's result (inputs already checked), or nullopt when it does not take these inputs.
std::optional<InProjectionOutputs> in_projection_step(const InProjectionStep& in, Tensor& conv_state);
}  // namespace cpu
namespace cuda {
// The fused paths' result, or nullopt when neither takes these inputs.
std::optional<InProjectionOutputs> in_projection_step(const InProjectionStep& in, Tensor& conv_state);
}  // namespace cuda

}  // namespace mamba::ops

// One decode step of a whole stack of Mamba-1 layers (1 to 16 sequences, one token each) as a
// single CUDA kernel. For each sequence's row and layers ℓ = 0 … L−1, with out₋₁ = x (the embedding
// row) and no residual before layer 0:
//
//   s_ℓ       = out_{ℓ−1} + s_{ℓ−1}                                  (float32; s₋₁ = 0)
//   n         = s_ℓ / sqrt(mean(s_ℓ²) + eps) ⊙ w_norm
//   [x' | z]  = n · W_inᵀ                                            (x', z rounded to bf16)
//   u         = SiLU(causal_conv1d_step(x', conv_state))              (bf16; state shifted in place)
//   [δ_low | B | C] = u · W_xᵀ                                        (bf16)
//   δ         = softplus(δ_low · W_dtᵀ + b_dt)                         (float32)
//   h         = exp(δ ⊙ A) ⊙ h + (δ ⊙ u) ⊗ B;  y = (h · C + D ⊙ u) ⊙ SiLU(z)   (y bf16; h the SSM state)
//   out_ℓ     = y · W_outᵀ                                            (bf16)
//
// which is in_projection_step → linear_forward (x_proj) → selective_state_update_packed →
// linear_forward (out_proj) layer after layer, rounded where those ops store, with the pre-norm as
// the fused in-projection computes it (bf16(s ⊙ w_norm) staged, the sums scaled by 1/rms). It
// returns out_{L−1} and s_{L−1}: the final norm's inputs.
//
// Why one kernel: at batch 1 a layer's four kernels each wait for the one before, and HBM idles
// while they ramp up, synchronise and drain (docs/perf/cuda_model.md, session 24). Here every block
// streams its fixed slices of every layer's weights into a shared-memory ring from the start of
// the step, whatever the data dependencies, while its other warps compute and meet the other
// blocks at three grid-wide barriers a layer; the weights of the next phases arrive while a phase
// waits.
//
// Several sequences share each weight read: their rows are multiplied together on the tensor cores.
//
// Only what the kernel takes is accepted (decode_stack_fits): CUDA, 1 to 16 sequences, bf16 x and weight
// matrices, float32 norm weights, conv, δ bias, A and D, no in_proj or out_proj bias, d and the
// inner width multiples of 256, the inner width split over at most one block per multiprocessor in
// runs of a multiple of 8 channels that also split d evenly, a δ rank that is a multiple of 8, and
// N a power of two up to 32, conv width 2 to 4, at most 32 channels a block and 64 layers; for
// several sequences also channels a block a multiple of 16, model columns a block 8, 16, 32 or 64,
// a δ rank that is a multiple of 16, N ≥ 8 (y of 8 rows is summed over a channel's N lanes by
// exchanging halves), and channels × N a block a multiple or a divisor of 256. x_proj's partial
// sums must stay below 2^23 in magnitude (a larger or non-finite one makes δ, B and C NaN).
// Elsewhere the caller runs the per-layer ops.
#pragma once
#include <optional>
#include <vector>

#include "core/tensor.h"

namespace mamba::ops {

struct DecodeStackLayer {
  Tensor norm_weight;  // [d] f32
  Tensor in_proj;      // W_in [2E, d] bf16
  Tensor conv_weight;  // [E, K] f32 (or [E, 1, K])
  Tensor conv_bias;    // [E] f32, optional
  Tensor x_proj;       // W_x [R + 2N, E] bf16 as decode_stack_x_proj_blocks arranges it
  Tensor dt_proj;      // W_dt [E, R] bf16
  Tensor dt_bias;      // [E] f32
  Tensor A;            // [E, N] f32 (−exp(A_log))
  Tensor D;            // [E] f32
  Tensor out_proj;     // W_out [d, E] bf16
  Tensor conv_state;   // [rows, E, K − 1] f32, updated in place
  Tensor ssm_state;    // [rows, E, N] f32, updated in place
};

struct DecodeStackOutputs {
  Tensor out;       // [rows, d] bf16: the last layer's output
  Tensor residual;  // [rows, d] f32: the last layer's s
};

// W_x [R + 2N, E] with each block's columns together, [blocks, R + 2N, E / blocks], so that a block
// reads its slice as one copy (a derived copy the caller keeps while W_x is unchanged); undefined
// where the kernel would not run (no CUDA, or E and d that it cannot split).
Tensor decode_stack_x_proj_blocks(const Tensor& x_proj, int64_t d);

// Whether the kernel takes these inputs (see above); x is [rows, d].
bool decode_stack_fits(const Tensor& x, const std::vector<DecodeStackLayer>& layers);

// Whether the kernel is expected to beat the layer-by-layer kernels on these inputs (which it must
// take): where each block streams enough weight bytes a layer for HBM to be the limit. Below that
// the step is a chain of latencies, and three grid barriers a layer cost more than the separate
// kernels' launches overlapped. For several sequences also where the weight ring keeps at least 8
// slots beside the staged activations (docs/perf/cuda_model.md, m70: on the H100 130m up to 16
// sequences, 1.4b up to 8).
bool decode_stack_pays(const Tensor& x, const std::vector<DecodeStackLayer>& layers);

// The step (layers updated in place), or nullopt where decode_stack_fits is false. Throws, naming
// the layer and tensor, where a tensor's shape disagrees with the stack's geometry.
std::optional<DecodeStackOutputs> decode_stack_step(const Tensor& x, const std::vector<DecodeStackLayer>& layers,
                                                    float eps);

namespace cuda {
// The kernel's own conditions (after the shapes were checked) and the step itself.
bool decode_stack_fits(const Tensor& x, const std::vector<DecodeStackLayer>& layers);
bool decode_stack_pays(const Tensor& x, const std::vector<DecodeStackLayer>& layers);
DecodeStackOutputs decode_stack_step(const Tensor& x, const std::vector<DecodeStackLayer>& layers, float eps);
Tensor decode_stack_x_proj_blocks(const Tensor& x_proj, int64_t d);
}  // namespace cuda

}  // namespace mamba::ops

// One decode step of the Mamba-1 mixer for a batch of sequences (one token each), from the block
// input to the mixer's output:
//   [x_conv, z, s]  = in_projection_step(x, residual, w_norm, W_in, b_in, conv)   (ops/in_projection_step.h)
//   [δ_low | B | C] = x_conv · W_xᵀ                     (widths R, N, N; ops/linear.h)
//   y               = selective_state_update(u = x_conv, δ_low, W_δ, A, B, C, D, z, b_δ, softplus)
//                                                        (ops/selective_scan.h; the state advances in place)
//   out             = y · W_outᵀ + b_out
// with s the new residual stream (f32). It is exactly those ops one after another and runs as
// them, except on the CPU when every product takes the streaming kernel (decode's few rows): then
// the four ops are the phases of one team run (core/threads.h) with barriers between them, bitwise
// equal to the ops. As separate ops, each was a pool run with a few microseconds of set-up on the
// calling thread before it and a wait for the slowest thread after it (docs/perf/cpu_model.md v14).
#pragma once
#include <optional>
#include <vector>

#include "core/tensor.h"
#include "ops/in_projection_step.h"
#include "ops/selective_scan.h"

namespace mamba::ops {

struct MixerStep {
  InProjectionStep in_projection;
  Tensor x_proj_weight;    // W_x [R + 2N, C]
  Tensor dt_proj_weight;   // W_δ [C, R]
  Tensor dt_proj_bias;     // b_δ [C] f32
  Tensor A;                // [C, N] f32
  Tensor D;                // [C] f32, optional
  Tensor out_proj_weight;  // W_out [d, C]
  Tensor out_proj_bias;    // [d], optional
};

struct MixerStepOutputs {
  Tensor out;           // [batch, d], the dtype linear_forward gives
  Tensor residual_out;  // [batch, d] f32: s
};

// conv_state [batch, C, K−1] and ssm_state [batch, C, N] (f32) advance by one token. Every input
// is checked (by the ops, or before the CPU's team run) with messages naming the tensor.
MixerStepOutputs mamba1_mixer_step(const MixerStep& in, Tensor& conv_state, Tensor& ssm_state);

// The state update's inputs: x_conv and z from the in-projection, [δ_low, B, C] from x_proj.
ScanInputs mixer_step_scan_inputs(const MixerStep& in, const InProjectionOutputs& projected,
                                  const std::vector<Tensor>& x_proj_pieces);

namespace cpu {
// The team run's result, or nullopt when a product would not take the streaming kernel.
std::optional<MixerStepOutputs> mamba1_mixer_step(const MixerStep& in, Tensor& conv_state, Tensor& ssm_state);
}  // namespace cpu

}  // namespace mamba::ops

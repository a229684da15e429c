// The Mamba-1 mixer (selective SSM block), as MAMBA.md states it:
//   [x | z] = in_proj(u);  x ← SiLU(causal_conv(x));  [δ | B | C] = x_proj(x)
//   Δ = softplus(dt_proj.weight·δ + dt_proj.bias);  A = −exp(A_log)
//   y = selective_scan(x, Δ, A, B, C, D, z)  (y ⊙ SiLU(z) inside the scan);  out = out_proj(y)
// Forward keeps only what backward needs (the scan's inputs, never its [L, D, N] states).
// With no_selection (the paper's LTI ablation) the scan is ops/lti_scan.h instead.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "ops/decode_stack.h"
#include "ops/lti_scan.h"
#include "ops/norm.h"

namespace mamba::model {

struct Parameter;

// Parameters of one mixer, pointing into the model's parameter list.
struct Mamba1Weights {
  Parameter* in_proj_weight = nullptr;
  Parameter* in_proj_bias = nullptr;  // use_bias only
  Parameter* conv_weight = nullptr;   // [D, 1, K]
  Parameter* conv_bias = nullptr;     // use_conv_bias only
  Parameter* x_proj_weight = nullptr;
  Parameter* dt_proj_weight = nullptr;
  Parameter* dt_proj_bias = nullptr;
  Parameter* A_log = nullptr;
  Parameter* D = nullptr;
  Parameter* out_proj_weight = nullptr;
  Parameter* out_proj_bias = nullptr;  // use_bias only
  // The LTI ablation (no_selection): B and C [D, N] shared by all positions, Δ = softplus(dt
  // bias); x_proj and dt_proj.weight do not exist then.
  Parameter* lti_B = nullptr;
  Parameter* lti_C = nullptr;
};

// What a forward keeps for its backward.
struct Mamba1Activations {
  Tensor input;         // [M, d] mixer input (normalised residual stream)
  Tensor x, z;          // [batch, L, D] halves of in_proj's output
  Tensor x_conv;        // [batch, L, D] after conv + SiLU
  Tensor dt_low;        // [M, R]
  Tensor B, C;          // [batch, L, N]
  Tensor delta;         // [batch, L, D] before bias and softplus
  Tensor y;             // [batch, L, D] gated scan output
  Tensor A;             // [D, N]
  Tensor lengths;       // [batch] i32 or undefined
  Tensor chunk_states;  // the scan's states at its backward's chunks, or undefined (ops/selective_scan.h)
};

class Mamba1Mixer {
 public:
  Mamba1Mixer(const io::ModelConfig& config, const Mamba1Weights& weights);

  // u [batch, L, d] → [batch, L, d]. With `state` tensors given (conv [batch, D, K−1], ssm
  // [batch, D, N]) the sequence continues from them and they are replaced by the final states.
  // `keep` (optional) receives what backward needs.
  Tensor forward(const Tensor& u, const Tensor& lengths, Tensor* conv_state, Tensor* ssm_state,
                 Mamba1Activations* keep) const;
  // One token per sequence, with the block's residual add + norm in front (they run inside the
  // in-projection's kernel on CUDA: ops/in_projection_step.h): block_input holds x [batch, d] and
  // the residual, residual_out receives their sum; returns the mixer output [batch, d] and advances
  // the states in place.
  Tensor step(const ops::NormInputs& block_input, Tensor& conv_state, Tensor& ssm_state, Tensor& residual_out) const;
  // The same step as one layer of ops::decode_stack_step (with the block's norm weight in front), or
  // nullopt for a mixer it does not describe (the LTI ablation, in_proj or out_proj biases).
  std::optional<ops::DecodeStackLayer> decode_stack_layer(const Tensor& norm_weight, const Tensor& conv_state,
                                                          const Tensor& ssm_state) const;
  // Gradient of the input given dout [M, d]; parameter gradients accumulate into Parameter::grad,
  // except that with overwrite_product_grads those of product_gradients() are replaced.
  Tensor backward(const Tensor& dout, const Mamba1Activations& saved, bool overwrite_product_grads = false) const;
  // The parameters whose whole gradient one backward writes as a product (dW = dyᵀ·x), so that a
  // pass may overwrite them instead of adding to zeros: the weight matrices of in_proj and
  // out_proj, and of x_proj and dt_proj where B and C come from x_proj.
  std::vector<const Parameter*> product_gradients() const;
  // Drops values derived from the parameters (A); call after the parameters change in place.
  void forget_derived() {
    cached_A_ = Tensor{};
    cached_x_proj_blocks_ = Tensor{};
  }
  const Mamba1Weights& weights() const { return w_; }

 private:
  ops::LtiScanInputs lti_inputs(const Tensor& x_conv, const Tensor& z) const;
  // Adds dA (as dA_log), dD and d(delta bias) into the parameters' gradients.
  void accumulate_ssm_grads(const Tensor& dA, const Tensor& A, const Tensor& dD, const Tensor& ddelta_bias) const;
  // The rest of backward from the scan's input and gate gradients: conv, then in_proj.
  Tensor input_grad(const Tensor& dout, const Mamba1Activations& saved, const Tensor& dx_conv, const Tensor& dz,
                    bool overwrite_product_grads) const;
  Tensor conv_weight_2d() const;  // [D, K] view of the [D, 1, K] parameter
  // −exp(A_log), f32 on the model's device; cached, since decode would otherwise spend more
  // time on these D·N exponentials than on the recurrence itself.
  Tensor A() const;

  int64_t d_model_, d_inner_, d_state_, d_conv_, dt_rank_;
  Mamba1Weights w_;
  mutable Tensor cached_A_;
  mutable Tensor cached_x_proj_blocks_;  // W_x as ops::decode_stack_step reads it
};

}  // namespace mamba::model

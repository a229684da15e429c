// Element updates of the optimisers and the squared norm that gradient clipping needs, on the
// device of the parameter (so training steps never copy weights to the host).
//
// AdamW (PyTorch's torch.optim.AdamW at step t ≥ 1), per element of parameter p with gradient g,
// the step's scalars precomputed in double by the caller (AdamWScalars):
//   p ← p·decay_factor                          (decay_factor = 1 − lr·wd; 1 without weight decay)
//   m ← m + (1−β₁)·(g − m)                      (PyTorch's lerp form of β₁·m + (1−β₁)·g)
//   v ← β₂·v + (1−β₂)·g²
//   p ← p − step_size · m / (√v / √(1−β₂ᵗ) + ε)  (step_size = lr / (1−β₁ᵗ))
// SGD (torch.optim.SGD): g ← g + wd·p; with momentum μ the buffer b ← g at the first step and
//   b ← μ·b + g after, then p ← p − lr·b; without momentum p ← p − lr·g.
// accumulate_sum_of_squares: total[0] += Σ x², each element squared and summed in double, in an
//   order fixed by the tensor's size and the device (repeatable run to run).
// All tensors float32 except `total` (f64 [1]); every tensor on the device of `param` (`x`).
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

struct AdamWScalars {
  float decay_factor;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float step_size;
  float bias_correction2_sqrt;
  float eps;
};

struct SgdScalars {
  float lr;
  float weight_decay;
  float momentum;
  bool first_step;
};

void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWScalars& s);
// momentum_buffer is undefined when momentum is 0.
void sgd_update_(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdScalars& s);
void accumulate_sum_of_squares(const Tensor& x, Tensor& total);

namespace cpu {
void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWScalars& s);
void sgd_update_(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdScalars& s);
void accumulate_sum_of_squares(const Tensor& x, Tensor& total);
}  // namespace cpu
namespace cuda {
void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWScalars& s);
void sgd_update_(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdScalars& s);
void accumulate_sum_of_squares(const Tensor& x, Tensor& total);
}  // namespace cuda

}  // namespace mamba::ops

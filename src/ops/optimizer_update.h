// Element updates of the optimisers and the global gradient norm that clipping needs, over every
// parameter at once, on the device of the parameters (so training steps never copy weights to the
// host, and a step is a few launches whatever the number of parameter tensors).
//
// gradient_norm (torch.nn.utils.clip_grad_norm_): norm = √(Σ g²) over every gradient element of the
//   table, each element squared and summed in double, in an order fixed by the tensors' sizes and the
//   device (repeatable run to run); scale = max_norm / (norm + 1e-6) when 0 < max_norm < norm, else 1;
//   scale = NaN when norm is not finite. The updates below multiply each gradient by scale
//   (g ← g·scale, in float32) and change nothing when scale is NaN.
// AdamW (PyTorch's torch.optim.AdamW at step t ≥ 1), per element of parameter p with gradient g,
// the step's scalars precomputed in double by the caller (AdamWScalars):
//   p ← p·decay_factor                          (decay_factor = 1 − lr·wd; only slots with weight_decay)
//   m ← m + (1−β₁)·(g − m)                      (PyTorch's lerp form of β₁·m + (1−β₁)·g)
//   v ← β₂·v + (1−β₂)·g²
//   p ← p − step_size · m / (√v / √(1−β₂ᵗ) + ε)  (step_size = lr / (1−β₁ᵗ))
// SGD (torch.optim.SGD): g ← g + wd·p (wd only for slots with weight_decay); with momentum μ the
//   buffer b ← g at the first step and b ← μ·b + g after, then p ← p − lr·b; without momentum
//   p ← p − lr·g.
// Both: a slot's `compute` tensor, when defined, receives bf16(p) of the updated p (round to nearest
// even), the copy that mixed-precision products read.
#pragma once
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace mamba::ops {

// One parameter and its optimiser state. All float32 and of one shape, except `compute` (bf16).
struct ParameterSlot {
  Tensor param;
  Tensor grad;
  Tensor exp_avg;     // AdamW first moment or SGD momentum buffer; undefined for SGD without momentum
  Tensor exp_avg_sq;  // AdamW second moment; undefined for SGD
  Tensor compute;     // optional bf16 copy of param
  bool weight_decay;
};

// The parameters that the ops below update together, all on one device. On CUDA the constructor
// stores the tensors' addresses and sizes in device memory once, so each op is one or two launches;
// the tensors must keep their memory while the table is used (updates are in place).
class ParameterTable {
 public:
  explicit ParameterTable(std::vector<ParameterSlot> slots);
  const std::vector<ParameterSlot>& slots() const { return slots_; }
  Device device() const { return device_; }
  const std::shared_ptr<void>& backend_data() const { return backend_data_; }

 private:
  std::vector<ParameterSlot> slots_;
  Device device_ = Device::cpu;
  std::shared_ptr<void> backend_data_;  // CUDA: the device-side table (ops/cuda/optimizer_update.cu)
};

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

// Both f64 [1] / f32 [1] on the table's device; the updates read `scale` there.
struct GradientNorm {
  Tensor norm;
  Tensor scale;
};

GradientNorm gradient_norm(const ParameterTable& table, double max_norm);
void adamw_update_(const ParameterTable& table, const AdamWScalars& s, const Tensor& scale);
void sgd_update_(const ParameterTable& table, const SgdScalars& s, const Tensor& scale);

namespace cpu {
GradientNorm gradient_norm(const ParameterTable& table, double max_norm);
void adamw_update_(const ParameterTable& table, const AdamWScalars& s, const Tensor& scale);
void sgd_update_(const ParameterTable& table, const SgdScalars& s, const Tensor& scale);
}  // namespace cpu
namespace cuda {
std::shared_ptr<void> build_parameter_table(const std::vector<ParameterSlot>& slots);
GradientNorm gradient_norm(const ParameterTable& table, double max_norm);
void adamw_update_(const ParameterTable& table, const AdamWScalars& s, const Tensor& scale);
void sgd_update_(const ParameterTable& table, const SgdScalars& s, const Tensor& scale);
}  // namespace cuda

}  // namespace mamba::ops

// Optimisers, gradient clipping and the learning-rate schedule.
//
// AdamW (PyTorch's torch.optim.AdamW, step t ≥ 1, per element of a parameter p with gradient g):
//   p ← p − lr·wd·p                      (decoupled weight decay; skipped when weight_decay=false)
//   m ← m + (1−β₁)·(g − m)               (= β₁·m + (1−β₁)·g, written as PyTorch's lerp)
//   v ← β₂·v + (1−β₂)·g²
//   p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)
// SGD (torch.optim.SGD): g ← g + wd·p (coupled L2, only for decayed parameters); with momentum μ > 0
//   b ← g at the first step, b ← μ·b + g after; p ← p − lr·b. Without momentum p ← p − lr·g.
// Scalars (bias corrections, step sizes) are computed in double; elements are float32.
//
// Each optimiser's element update is one function over raw arrays (adamw_update, sgd_update), so a
// device kernel can replace it without touching the rest. Parameters must be float32 on the CPU.
//
// Global-norm clipping (torch.nn.utils.clip_grad_norm_): n = √(Σ g²) over every gradient element,
// summed in double per block and combined in block order (deterministic at a fixed thread count);
// when n > max_norm every gradient is scaled by max_norm / (n + 1e-6).
//
// Schedule, step s = 1, 2, …: during warmup (s ≤ W) lr·s/W; then constant lr, or cosine
//   min_lr + ½(lr − min_lr)(1 + cos(π·(s − W)/(S − W)))  reaching min_lr at the last step S.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/language_model.h"

namespace mamba::train {

enum class OptimizerKind { adamw, sgd };
OptimizerKind optimizer_kind_from_name(const std::string& name, const std::string& flag);

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::adamw;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double momentum = 0;  // SGD only
};

// Element updates over float32 arrays of n elements, with the step's scalars precomputed.
struct AdamWScalars {
  float decay_factor;     // 1 − lr·wd (1 for parameters without weight decay)
  float one_minus_beta1;  // 1 − β₁
  float beta2;
  float one_minus_beta2;        // 1 − β₂
  float step_size;              // lr / (1 − β₁ᵗ)
  float bias_correction2_sqrt;  // √(1 − β₂ᵗ)
  float eps;
};
void adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamWScalars& s);
// momentum_buffer may be null when momentum is 0. `first_step` initialises the buffer with g.
void sgd_update(float* param, const float* grad, float* momentum_buffer, int64_t n, float lr, float weight_decay,
                float momentum, bool first_step);

class Optimizer {
 public:
  // Allocates the state (zeros) for every parameter; parameters must be float32 on the CPU.
  Optimizer(const OptimizerOptions& options, const std::vector<model::Parameter>& params);

  // One update of every parameter from its gradient at learning rate lr; increments step().
  void step(std::vector<model::Parameter>& params, double lr);
  int64_t steps() const { return step_; }
  const OptimizerOptions& options() const { return options_; }

  // State tensors: `exp_avg.<name>`, `exp_avg_sq.<name>` (AdamW) or `momentum_buffer.<name>` (SGD
  // with momentum), f32, plus `step` (i64 [1]). Restoring checks every name, shape and dtype;
  // `source` names the file in errors.
  io::TensorMap state_dict() const;
  void load_state_dict(const io::TensorMap& state, const std::string& source);

 private:
  OptimizerOptions options_;
  std::vector<std::string> names_;
  std::vector<Tensor> exp_avg_;     // AdamW first moment, or SGD momentum buffer
  std::vector<Tensor> exp_avg_sq_;  // AdamW second moment
  int64_t step_ = 0;
};

// Multiplies every gradient by factor (averaging accumulated micro-batches).
void scale_gradients(std::vector<model::Parameter>& params, double factor);
// Global L2 norm of all gradients; clips to max_norm when max_norm > 0. Returns the norm before clipping.
double clip_grad_norm(std::vector<model::Parameter>& params, double max_norm);

enum class ScheduleKind { constant, cosine };
ScheduleKind schedule_kind_from_name(const std::string& name, const std::string& flag);

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::constant;
  double lr = 1e-3;
  double min_lr = 0;
  int64_t warmup = 0;
  int64_t total_steps = 1;
  double at(int64_t step) const;  // step is 1-based
};

}  // namespace mamba::train

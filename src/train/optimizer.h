// Optimisers, gradient clipping and the learning-rate schedule.
//
// The element updates (AdamW with PyTorch semantics, SGD with optional momentum) and the global
// gradient norm are ops over every parameter at once (ops/optimizer_update.h, where their math is
// written) running on the parameters' device; this layer computes each step's scalars in double and
// keeps the optimiser state beside the parameters, on the same device.
//
// Global-norm clipping (torch.nn.utils.clip_grad_norm_): n = √(Σ g²) over every gradient element,
// summed in double in an order fixed per device and thread count (repeatable run to run); when
// n > max_norm every gradient is scaled by max_norm / (n + 1e-6). The scale stays on the device: the
// update reads it there, and the norm is copied to the host only once the update is queued.
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
#include "ops/optimizer_update.h"

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

class Optimizer {
 public:
  // Allocates the state (zeros) for every parameter, on its device; parameters must be float32.
  Optimizer(const OptimizerOptions& options, const std::vector<model::Parameter>& params);

  // One update of every parameter from its gradient at learning rate lr, the gradients clipped to a
  // global norm of max_norm (0: not clipped); a parameter's bf16 compute copy, when it has one, is
  // rewritten from its new value. Returns the gradient norm before clipping. A norm that is not
  // finite changes nothing (no parameter, state or step count); otherwise increments step().
  double step(std::vector<model::Parameter>& params, double lr, double max_norm);
  int64_t steps() const { return step_; }
  const OptimizerOptions& options() const { return options_; }

  // State tensors: `exp_avg.<name>`, `exp_avg_sq.<name>` (AdamW) or `momentum_buffer.<name>` (SGD
  // with momentum), f32 on the CPU, plus `step` (i64 [1]). Restoring checks every name, shape and dtype;
  // `source` names the file in errors.
  io::TensorMap state_dict() const;
  void load_state_dict(const io::TensorMap& state, const std::string& source);

 private:
  OptimizerOptions options_;
  std::vector<std::string> names_;
  std::vector<Tensor> exp_avg_;                 // AdamW first moment, or SGD momentum buffer
  std::vector<Tensor> exp_avg_sq_;              // AdamW second moment
  std::unique_ptr<ops::ParameterTable> table_;  // the parameters and state above, as the update ops take them
  int64_t step_ = 0;
  void build_table(const std::vector<model::Parameter>& params);
  bool table_holds(const std::vector<model::Parameter>& params) const;
};

// Multiplies every gradient by factor (averaging accumulated micro-batches).
void scale_gradients(std::vector<model::Parameter>& params, double factor);

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

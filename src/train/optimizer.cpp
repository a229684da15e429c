#include "train/optimizer.h"

#include <cmath>
#include <numbers>

#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/optimizer_update.h"

namespace mamba::train {

namespace {

void check_trainable(const model::Parameter& p) {
  MAMBA_CHECK(p.value.dtype() == DType::f32, "parameter ", p.name, ": training needs float32 weights, found ",
              dtype_name(p.value.dtype()), " (drop --dtype or use --dtype f32)");
  MAMBA_CHECK(p.grad.defined(), "parameter ", p.name, ": no gradient (enable_grad was not called)");
  MAMBA_CHECK(p.grad.dtype() == DType::f32 && p.grad.numel() == p.value.numel() && p.grad.device() == p.value.device(),
              "parameter ", p.name, ": gradient must be float32 with ", p.value.numel(), " elements on ",
              device_name(p.value.device()));
}

}  // namespace

OptimizerKind optimizer_kind_from_name(const std::string& name, const std::string& flag) {
  if (name == "adamw") return OptimizerKind::adamw;
  if (name == "sgd") return OptimizerKind::sgd;
  fail(flag, ": unknown optimiser '", name, "' (expected adamw or sgd)");
}

ScheduleKind schedule_kind_from_name(const std::string& name, const std::string& flag) {
  if (name == "constant") return ScheduleKind::constant;
  if (name == "cosine") return ScheduleKind::cosine;
  fail(flag, ": unknown schedule '", name, "' (expected constant or cosine)");
}

Optimizer::Optimizer(const OptimizerOptions& options, const std::vector<model::Parameter>& params) : options_(options) {
  MAMBA_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
              "--adam-betas: each beta must lie in [0, 1), got ", options.beta1, ",", options.beta2);
  MAMBA_CHECK(options.eps > 0, "--adam-eps: must be positive, got ", options.eps);
  MAMBA_CHECK(options.weight_decay >= 0, "--weight-decay: must be non-negative, got ", options.weight_decay);
  MAMBA_CHECK(options.momentum >= 0 && options.momentum < 1, "SGD momentum must lie in [0, 1), got ", options.momentum);
  for (const model::Parameter& p : params) {
    check_trainable(p);
    names_.push_back(p.name);
    bool needs_first = options.kind == OptimizerKind::adamw || options.momentum > 0;
    const Device device = p.value.device();
    exp_avg_.push_back(needs_first ? Tensor::zeros(p.value.shape(), DType::f32, device) : Tensor());
    exp_avg_sq_.push_back(options.kind == OptimizerKind::adamw ? Tensor::zeros(p.value.shape(), DType::f32, device)
                                                               : Tensor());
  }
  build_table(params);
}

void Optimizer::build_table(const std::vector<model::Parameter>& params) {
  std::vector<ops::ParameterSlot> slots;
  for (size_t i = 0; i < params.size(); ++i) {
    const model::Parameter& p = params[i];
    slots.push_back({p.value, p.grad, exp_avg_[i], exp_avg_sq_[i], p.compute, p.weight_decay});
  }
  table_ = std::make_unique<ops::ParameterTable>(std::move(slots));
}

bool Optimizer::table_holds(const std::vector<model::Parameter>& params) const {
  for (size_t i = 0; i < params.size(); ++i) {
    const ops::ParameterSlot& slot = table_->slots()[i];
    const model::Parameter& p = params[i];
    if (slot.param.raw() != p.value.raw() || slot.grad.raw() != p.grad.raw() ||
        slot.compute.defined() != p.compute.defined() || (p.compute.defined() && slot.compute.raw() != p.compute.raw()))
      return false;
  }
  return true;
}

double Optimizer::step(std::vector<model::Parameter>& params, double lr, double max_norm) {
  MAMBA_CHECK(params.size() == names_.size(), "optimiser built for ", names_.size(), " parameters, stepped with ",
              params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    MAMBA_CHECK(params[i].name == names_[i], "optimiser parameter ", i, " is ", names_[i], ", stepped with ",
                params[i].name);
    check_trainable(params[i]);
  }
  // Parameters given new memory since the last step (weights replaced, compute copies remade).
  if (!table_holds(params)) build_table(params);
  ++step_;
  const OptimizerOptions& o = options_;
  const ops::GradientNorm norm = ops::gradient_norm(*table_, max_norm);
  if (o.kind == OptimizerKind::adamw) {
    double bias_correction1 = 1.0 - std::pow(o.beta1, double(step_));
    double bias_correction2 = 1.0 - std::pow(o.beta2, double(step_));
    ops::AdamWScalars s{float(1.0 - lr * o.weight_decay),
                        float(1.0 - o.beta1),
                        float(o.beta2),
                        float(1.0 - o.beta2),
                        float(lr / bias_correction1),
                        float(std::sqrt(bias_correction2)),
                        float(o.eps)};
    ops::adamw_update_(*table_, s, norm.scale);
  } else {
    ops::sgd_update_(*table_, {float(lr), float(o.weight_decay), float(o.momentum), step_ == 1}, norm.scale);
  }
  const double grad_norm = on_host(norm.norm).data<double>()[0];
  if (!std::isfinite(grad_norm)) --step_;  // the updates were skipped
  return grad_norm;
}

io::TensorMap Optimizer::state_dict() const {
  io::TensorMap state;
  for (size_t i = 0; i < names_.size(); ++i) {
    if (options_.kind == OptimizerKind::adamw) {
      state["exp_avg." + names_[i]] = on_host(exp_avg_[i]);
      state["exp_avg_sq." + names_[i]] = on_host(exp_avg_sq_[i]);
    } else if (exp_avg_[i].defined()) {
      state["momentum_buffer." + names_[i]] = on_host(exp_avg_[i]);
    }
  }
  state["step"] = Tensor::from_vector({double(step_)}, {1}, DType::i64);
  return state;
}

void Optimizer::load_state_dict(const io::TensorMap& state, const std::string& source) {
  auto restore = [&](const std::string& name, Tensor& into) {
    auto it = state.find(name);
    MAMBA_CHECK(it != state.end(), source, ": optimiser state tensor '", name,
                "' is missing (was the run started with another --optimizer or model?)");
    MAMBA_CHECK(it->second.dtype() == DType::f32 && it->second.shape() == into.shape(), source, ": tensor '", name,
                "' must be f32 ", shape_string(into.shape()), ", found ", dtype_name(it->second.dtype()), " ",
                shape_string(it->second.shape()));
    into.copy_from(it->second);
  };
  for (size_t i = 0; i < names_.size(); ++i) {
    if (options_.kind == OptimizerKind::adamw) {
      restore("exp_avg." + names_[i], exp_avg_[i]);
      restore("exp_avg_sq." + names_[i], exp_avg_sq_[i]);
    } else if (exp_avg_[i].defined()) {
      restore("momentum_buffer." + names_[i], exp_avg_[i]);
    }
  }
  auto it = state.find("step");
  MAMBA_CHECK(it != state.end() && it->second.numel() == 1 && it->second.dtype() == DType::i64, source,
              ": optimiser state needs tensor 'step' (i64 [1])");
  step_ = it->second.data<int64_t>()[0];
  MAMBA_CHECK(step_ >= 0, source, ": optimiser step is negative (", step_, ")");
}

void scale_gradients(std::vector<model::Parameter>& params, double factor) {
  for (model::Parameter& p : params) ops::scale_(p.grad, factor);
}

double LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step <= warmup) return lr * double(step) / double(warmup);
  if (kind == ScheduleKind::constant || total_steps <= warmup) return lr;
  double progress = double(std::min(step, total_steps) - warmup) / double(total_steps - warmup);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace mamba::train

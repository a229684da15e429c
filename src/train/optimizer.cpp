#include "train/optimizer.h"

#include <cmath>
#include <numbers>

#include "core/error.h"
#include "core/threads.h"

namespace mamba::train {

namespace {

// Elementwise loops get at least this many elements per thread, so tiny parameters run inline.
constexpr int64_t kMinElementsPerRange = 16384;

int ranges_for(int64_t n) { return int(std::max<int64_t>(1, n / kMinElementsPerRange)); }

void check_trainable(const model::Parameter& p) {
  MAMBA_CHECK(p.value.device() == Device::cpu && p.grad.device() == Device::cpu, "parameter ", p.name,
              ": the optimiser runs on CPU tensors only (no device optimiser is built yet)");
  MAMBA_CHECK(p.value.dtype() == DType::f32, "parameter ", p.name, ": training needs float32 weights, found ",
              dtype_name(p.value.dtype()), " (drop --dtype or use --dtype f32)");
  MAMBA_CHECK(p.grad.defined(), "parameter ", p.name, ": no gradient (enable_grad was not called)");
  MAMBA_CHECK(p.grad.dtype() == DType::f32 && p.grad.numel() == p.value.numel(), "parameter ", p.name,
              ": gradient must be float32 with ", p.value.numel(), " elements");
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

void adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                  const AdamWScalars& s) {
  parallel_for(n, ranges_for(n), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      float g = grad[i];
      float p = param[i] * s.decay_factor;
      float m = exp_avg[i] + s.one_minus_beta1 * (g - exp_avg[i]);
      float v = exp_avg_sq[i] * s.beta2 + s.one_minus_beta2 * (g * g);
      float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
      param[i] = p - s.step_size * (m / denom);
      exp_avg[i] = m;
      exp_avg_sq[i] = v;
    }
  });
}

void sgd_update(float* param, const float* grad, float* momentum_buffer, int64_t n, float lr, float weight_decay,
                float momentum, bool first_step) {
  parallel_for(n, ranges_for(n), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      float g = grad[i] + weight_decay * param[i];
      if (momentum_buffer) {
        g = first_step ? g : momentum * momentum_buffer[i] + g;
        momentum_buffer[i] = g;
      }
      param[i] -= lr * g;
    }
  });
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
    exp_avg_.push_back(needs_first ? Tensor::zeros(p.value.shape(), DType::f32) : Tensor());
    exp_avg_sq_.push_back(options.kind == OptimizerKind::adamw ? Tensor::zeros(p.value.shape(), DType::f32) : Tensor());
  }
}

void Optimizer::step(std::vector<model::Parameter>& params, double lr) {
  MAMBA_CHECK(params.size() == names_.size(), "optimiser built for ", names_.size(), " parameters, stepped with ",
              params.size());
  ++step_;
  const OptimizerOptions& o = options_;
  double bias_correction1 = 1.0 - std::pow(o.beta1, double(step_));
  double bias_correction2 = 1.0 - std::pow(o.beta2, double(step_));
  for (size_t i = 0; i < params.size(); ++i) {
    model::Parameter& p = params[i];
    MAMBA_CHECK(p.name == names_[i], "optimiser parameter ", i, " is ", names_[i], ", stepped with ", p.name);
    check_trainable(p);
    double wd = p.weight_decay ? o.weight_decay : 0.0;
    float* value = p.value.data<float>();
    const float* grad = p.grad.data<float>();
    if (o.kind == OptimizerKind::adamw) {
      AdamWScalars s{float(1.0 - lr * wd), float(1.0 - o.beta1),         float(o.beta2),
                     float(1.0 - o.beta2), float(lr / bias_correction1), float(std::sqrt(bias_correction2)),
                     float(o.eps)};
      adamw_update(value, grad, exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(), p.value.numel(), s);
    } else {
      float* buffer = exp_avg_[i].defined() ? exp_avg_[i].data<float>() : nullptr;
      sgd_update(value, grad, buffer, p.value.numel(), float(lr), float(wd), float(o.momentum), step_ == 1);
    }
  }
}

io::TensorMap Optimizer::state_dict() const {
  io::TensorMap state;
  for (size_t i = 0; i < names_.size(); ++i) {
    if (options_.kind == OptimizerKind::adamw) {
      state["exp_avg." + names_[i]] = exp_avg_[i];
      state["exp_avg_sq." + names_[i]] = exp_avg_sq_[i];
    } else if (exp_avg_[i].defined()) {
      state["momentum_buffer." + names_[i]] = exp_avg_[i];
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
  float f = float(factor);
  for (model::Parameter& p : params) {
    float* g = p.grad.data<float>();
    int64_t n = p.grad.numel();
    parallel_for(n, ranges_for(n), [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) g[i] *= f;
    });
  }
}

double clip_grad_norm(std::vector<model::Parameter>& params, double max_norm) {
  double total = 0;
  for (const model::Parameter& p : params) {
    const float* g = p.grad.data<float>();
    int64_t n = p.grad.numel();
    int ranges = ranges_for(n);
    std::vector<double> partial(size_t(ranges), 0.0);
    parallel_for(n, ranges, [&](int64_t begin, int64_t end, int r) {
      double sum = 0;
      for (int64_t i = begin; i < end; ++i) sum += double(g[i]) * double(g[i]);
      partial[size_t(r)] = sum;
    });
    for (double s : partial) total += s;
  }
  double norm = std::sqrt(total);
  if (max_norm > 0 && norm > max_norm) scale_gradients(params, max_norm / (norm + 1e-6));
  return norm;
}

double LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step <= warmup) return lr * double(step) / double(warmup);
  if (kind == ScheduleKind::constant || total_steps <= warmup) return lr;
  double progress = double(std::min(step, total_steps) - warmup) / double(total_steps - warmup);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace mamba::train

// CPU optimiser updates (ops/optimizer_update.h): parameter by parameter, threaded over element
// ranges.
#include "ops/optimizer_update.h"

#include <cmath>
#include <vector>

#include "core/threads.h"

namespace mamba::ops::cpu {

namespace {
// Loops get at least this many elements per thread, so tiny parameters run inline.
constexpr int64_t kMinElementsPerRange = 16384;
int ranges_for(int64_t n) { return int(std::max<int64_t>(1, n / kMinElementsPerRange)); }

uint16_t* compute_or_null(const ParameterSlot& slot) {
  return slot.compute.defined() ? slot.compute.data<uint16_t>() : nullptr;
}
}  // namespace

GradientNorm gradient_norm(const ParameterTable& table, double max_norm) {
  double total = 0;
  for (const ParameterSlot& slot : table.slots()) {
    const float* g = slot.grad.data<float>();
    const int64_t n = slot.grad.numel();
    const int ranges = ranges_for(n);
    std::vector<double> partial(size_t(ranges), 0.0);
    parallel_for(n, ranges, [&](int64_t begin, int64_t end, int r) {
      double sum = 0;
      for (int64_t i = begin; i < end; ++i) sum += double(g[i]) * double(g[i]);
      partial[size_t(r)] = sum;
    });
    for (double s : partial) total += s;
  }
  const double norm = std::sqrt(total);
  double scale = max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
  if (!std::isfinite(norm)) scale = NAN;
  return {Tensor::from_vector({norm}, {1}, DType::f64), Tensor::from_vector({scale}, {1}, DType::f32)};
}

void adamw_update_(const ParameterTable& table, const AdamWScalars& s, const Tensor& scale_t) {
  const float scale = scale_t.data<float>()[0];
  if (!std::isfinite(scale)) return;
  for (const ParameterSlot& slot : table.slots()) {
    float* param = slot.param.data<float>();
    const float* grad = slot.grad.data<float>();
    float* exp_avg = slot.exp_avg.data<float>();
    float* exp_avg_sq = slot.exp_avg_sq.data<float>();
    uint16_t* compute = compute_or_null(slot);
    const float decay_factor = slot.weight_decay ? s.decay_factor : 1.0f;
    const int64_t n = slot.param.numel();
    parallel_for(n, ranges_for(n), [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) {
        float g = grad[i] * scale;
        float p = param[i] * decay_factor;
        float m = exp_avg[i] + s.one_minus_beta1 * (g - exp_avg[i]);
        float v = exp_avg_sq[i] * s.beta2 + s.one_minus_beta2 * (g * g);
        float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
        param[i] = p - s.step_size * (m / denom);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (compute) compute[i] = f32_to_bf16(param[i]);
      }
    });
  }
}

void sgd_update_(const ParameterTable& table, const SgdScalars& s, const Tensor& scale_t) {
  const float scale = scale_t.data<float>()[0];
  if (!std::isfinite(scale)) return;
  for (const ParameterSlot& slot : table.slots()) {
    float* param = slot.param.data<float>();
    const float* grad = slot.grad.data<float>();
    float* buffer = slot.exp_avg.defined() ? slot.exp_avg.data<float>() : nullptr;
    uint16_t* compute = compute_or_null(slot);
    const float weight_decay = slot.weight_decay ? s.weight_decay : 0.0f;
    const int64_t n = slot.param.numel();
    parallel_for(n, ranges_for(n), [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) {
        float g = grad[i] * scale + weight_decay * param[i];
        if (buffer) {
          g = s.first_step ? g : s.momentum * buffer[i] + g;
          buffer[i] = g;
        }
        param[i] -= s.lr * g;
        if (compute) compute[i] = f32_to_bf16(param[i]);
      }
    });
  }
}

}  // namespace mamba::ops::cpu

// CPU optimiser updates (ops/optimizer_update.h), threaded over element ranges.
#include "ops/optimizer_update.h"

#include <cmath>
#include <vector>

#include "core/threads.h"

namespace mamba::ops::cpu {

namespace {
// Loops get at least this many elements per thread, so tiny parameters run inline.
constexpr int64_t kMinElementsPerRange = 16384;
int ranges_for(int64_t n) { return int(std::max<int64_t>(1, n / kMinElementsPerRange)); }
}  // namespace

void adamw_update_(Tensor& param_t, const Tensor& grad_t, Tensor& exp_avg_t, Tensor& exp_avg_sq_t,
                   const AdamWScalars& s) {
  float* param = param_t.data<float>();
  const float* grad = grad_t.data<float>();
  float* exp_avg = exp_avg_t.data<float>();
  float* exp_avg_sq = exp_avg_sq_t.data<float>();
  const int64_t n = param_t.numel();
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

void sgd_update_(Tensor& param_t, const Tensor& grad_t, Tensor& momentum_buffer, const SgdScalars& s) {
  float* param = param_t.data<float>();
  const float* grad = grad_t.data<float>();
  float* buffer = momentum_buffer.defined() ? momentum_buffer.data<float>() : nullptr;
  const int64_t n = param_t.numel();
  parallel_for(n, ranges_for(n), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      float g = grad[i] + s.weight_decay * param[i];
      if (buffer) {
        g = s.first_step ? g : s.momentum * buffer[i] + g;
        buffer[i] = g;
      }
      param[i] -= s.lr * g;
    }
  });
}

void accumulate_sum_of_squares(const Tensor& x, Tensor& total) {
  const float* g = x.data<float>();
  const int64_t n = x.numel();
  const int ranges = ranges_for(n);
  std::vector<double> partial(size_t(ranges), 0.0);
  parallel_for(n, ranges, [&](int64_t begin, int64_t end, int r) {
    double sum = 0;
    for (int64_t i = begin; i < end; ++i) sum += double(g[i]) * double(g[i]);
    partial[size_t(r)] = sum;
  });
  double& out = total.data<double>()[0];
  for (double s : partial) out += s;
}

}  // namespace mamba::ops::cpu

#include "ops/cross_entropy.h"

#include <cmath>
#include <vector>

namespace mamba::ops::ref {

CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight) {
  check_cross_entropy_inputs(hidden, weight, targets, dweight);
  const int64_t M = hidden.size(0), d = hidden.size(1), V = weight.size(0);
  std::vector<double> h = hidden.to_double_vector(), w = weight.to_double_vector();
  std::vector<double> dh(size_t(M * d), 0.0);
  std::vector<double> dw = with_grad && dweight ? dweight->to_double_vector() : std::vector<double>{};
  CrossEntropyResult result;
  result.predictions = Tensor::empty({M}, DType::i32);
  int64_t count = 0;
  for (int64_t i = 0; i < M; ++i) count += targets.item(i) >= 0;
  double total = 0;
  std::vector<double> logits(static_cast<size_t>(V));
  for (int64_t i = 0; i < M; ++i) {
    int64_t best = 0;
    for (int64_t v = 0; v < V; ++v) {
      double z = 0;
      for (int64_t k = 0; k < d; ++k) z += h[size_t(i * d + k)] * w[size_t(v * d + k)];
      logits[size_t(v)] = z;
      if (z > logits[size_t(best)]) best = v;
    }
    result.predictions.data<int32_t>()[i] = int32_t(best);
    const int64_t t = int64_t(targets.item(i));
    if (t < 0) continue;
    double sum = 0;
    for (double z : logits) sum += std::exp(z - logits[size_t(best)]);
    const double lse = logits[size_t(best)] + std::log(sum);
    total += lse - logits[size_t(t)];
    if (!with_grad) continue;
    for (int64_t v = 0; v < V; ++v) {
      double g = (std::exp(logits[size_t(v)] - lse) - (v == t ? 1.0 : 0.0)) / double(count);
      for (int64_t k = 0; k < d; ++k) {
        dh[size_t(i * d + k)] += g * w[size_t(v * d + k)];
        if (dweight) dw[size_t(v * d + k)] += g * h[size_t(i * d + k)];
      }
    }
  }
  result.loss = LossTotals::on_host(count > 0 ? total / double(count) : 0.0, count);
  if (with_grad) {
    result.dhidden = Tensor::from_vector(dh, {M, d}, DType::f64);
    if (dweight) dweight->copy_from(Tensor::from_vector(dw, dweight->shape(), DType::f64));
  }
  return result;
}

}  // namespace mamba::ops::ref

#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/threads.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

namespace {

// Logits held at once: 4 Mi floats (16 MiB), i.e. 83 rows of a 50280-token vocabulary.
constexpr int64_t kLogitBudget = int64_t(1) << 22;

}  // namespace

CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight) {
  check_cross_entropy_inputs(hidden, weight, targets, dweight);
  check_f32_activation(hidden, "lm head hidden");
  check_float_weight(weight, "lm head weight");
  if (with_grad && dweight) check_dtype(*dweight, DType::f32, "lm head weight gradient");
  const int64_t M = hidden.size(0), d = hidden.size(1), V = weight.size(0);
  const float* h = hidden.data<float>();
  const int32_t* target = targets.data<int32_t>();

  CrossEntropyResult result;
  const int64_t count = std::count_if(target, target + M, [](int32_t t) { return t >= 0; });
  result.predictions = Tensor::empty({M}, DType::i32);
  int32_t* prediction = result.predictions.data<int32_t>();
  float* dh = nullptr;
  if (with_grad) {
    result.dhidden = Tensor::zeros({M, d}, DType::f32);
    dh = result.dhidden.data<float>();
  }
  const float grad_scale = count > 0 ? 1.0f / float(count) : 0.0f;
  const int64_t block_rows = std::clamp<int64_t>(kLogitBudget / std::max<int64_t>(V, 1), 1, std::max<int64_t>(M, 1));
  Tensor logit_block = Tensor::empty({block_rows, V}, DType::f32);  // scratch, fully written per block
  float* logits = logit_block.data<float>();
  std::vector<double> row_loss(size_t(M), 0.0);

  for (int64_t m0 = 0; m0 < M; m0 += block_rows) {
    const int64_t rows = std::min(block_rows, M - m0);
    gemm_x_wt(h + m0 * d, rows, weight, logits, V);
    // Each row: argmax, logsumexp, loss; then the row becomes its gradient (softmax − onehot)/count.
    parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        float* z = logits + r * V;
        const int32_t t = target[m0 + r];
        const int64_t best = std::max_element(z, z + V) - z;
        const float max = z[best], target_logit = t >= 0 ? z[t] : 0.0f;
        exp_shifted_inplace(z, V, max);
        const double sum = blocked_sum(V, [&](int64_t i) { return z[i]; });
        prediction[m0 + r] = int32_t(best);
        if (t >= 0) row_loss[size_t(m0 + r)] = double(max) + std::log(sum) - double(target_logit);
        if (!with_grad) continue;
        const float softmax_scale = t >= 0 ? float(1.0 / sum) * grad_scale : 0.0f;
        for (int64_t i = 0; i < V; ++i) z[i] *= softmax_scale;
        if (t >= 0) z[t] -= grad_scale;
      }
    });
    if (!with_grad) continue;
    gemm_dy_w(logits, rows, V, weight, dh + m0 * d);
    if (dweight) gemm_accumulate_dyt_x(logits, rows, V, h + m0 * d, V, d, dweight->data<float>());
  }
  double total = 0;
  for (double l : row_loss) total += l;
  result.loss = LossTotals::on_host(count > 0 ? total / double(count) : 0.0, count);
  return result;
}

}  // namespace mamba::ops::cpu

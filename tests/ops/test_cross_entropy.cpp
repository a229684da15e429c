#include <gtest/gtest.h>

#include <cmath>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/cross_entropy.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

Tensor random_targets(int64_t M, int64_t V, Rng& rng, int ignore_every) {
  std::vector<double> t;
  for (int64_t i = 0; i < M; ++i) t.push_back(i % ignore_every == 1 ? -1.0 : double(rng.below(uint64_t(V))));
  return Tensor::from_vector(t, {M}, DType::i32);
}

// cpu's argmax may differ from the reference only between logits equal to float32 precision.
void expect_predictions_match(const CrossEntropyResult& got, const Tensor& hidden, const Tensor& weight) {
  const int64_t M = hidden.size(0), d = hidden.size(1), V = weight.size(0);
  for (int64_t i = 0; i < M; ++i) {
    auto logit = [&](int64_t v) {
      double z = 0;
      for (int64_t k = 0; k < d; ++k) z += hidden.item(i * d + k) * weight.item(v * d + k);
      return z;
    };
    double best = -INFINITY;
    for (int64_t v = 0; v < V; ++v) best = std::max(best, logit(v));
    EXPECT_NEAR(logit(int64_t(got.predictions.item(i))), best, 1e-5) << "row " << i;
  }
}

TEST(OpsCrossEntropy, CpuMatchesReference) {
  set_num_threads(2);
  Rng rng(51);
  const int64_t M = 13, d = 19, V = 301;
  for (DType wt : {DType::f32, DType::bf16})
    for (int64_t rows : {int64_t(3), M, int64_t(70)}) {  // streaming and BLAS products
      Tensor h = random_tensor({rows, d}, DType::f32, rng);
      Tensor w = random_tensor({V, d}, wt, rng);
      Tensor targets = random_targets(rows, V, rng, 4);
      Tensor dw_start = random_tensor({V, d}, DType::f32, rng);
      Tensor dw_cpu = dw_start.clone(), dw_ref = dw_start.to(DType::f64);
      CrossEntropyResult got = lm_head_cross_entropy(h, w, targets, true, &dw_cpu);
      CrossEntropyResult expected = ref::lm_head_cross_entropy(h, w, targets, true, &dw_ref);
      EXPECT_EQ(got.loss.count(), expected.loss.count());
      EXPECT_NEAR(got.loss.mean(), expected.loss.mean(), 1e-5 * std::abs(expected.loss.mean()));
      EXPECT_LT(relative_error(got.dhidden, expected.dhidden), 1e-5) << dtype_name(wt);
      EXPECT_LT(relative_error(dw_cpu, dw_ref), 1e-6) << dtype_name(wt);
      expect_predictions_match(got, h, w);
      // Ignored rows get no gradient.
      for (int64_t k = 0; k < d; ++k) EXPECT_EQ(got.dhidden.item(1 * d + k), 0.0);
    }
}

TEST(OpsCrossEntropy, ManyRowBlocksMatchReference) {
  set_num_threads(2);
  Rng rng(52);
  // V·M exceeds the CPU kernel's logit budget (4 Mi floats): the rows go in two blocks.
  const int64_t M = 110, d = 3, V = 40000;
  Tensor h = random_tensor({M, d}, DType::f32, rng, -3, 3);
  Tensor w = random_tensor({V, d}, DType::bf16, rng);
  Tensor targets = random_targets(M, V, rng, 7);
  Tensor dw_cpu = Tensor::zeros({V, d}, DType::f32), dw_ref = Tensor::zeros({V, d}, DType::f64);
  CrossEntropyResult got = lm_head_cross_entropy(h, w, targets, true, &dw_cpu);
  CrossEntropyResult expected = ref::lm_head_cross_entropy(h, w, targets, true, &dw_ref);
  EXPECT_NEAR(got.loss.mean(), expected.loss.mean(), 1e-5 * std::abs(expected.loss.mean()));
  EXPECT_LT(relative_error(got.dhidden, expected.dhidden), 1e-5);
  EXPECT_LT(relative_error(dw_cpu, dw_ref), 1e-5);
  // Same inputs, same bits.
  Tensor dw_again = Tensor::zeros({V, d}, DType::f32);
  CrossEntropyResult again = lm_head_cross_entropy(h, w, targets, true, &dw_again);
  EXPECT_EQ(again.loss.mean(), got.loss.mean());
  EXPECT_EQ(relative_error(again.dhidden, got.dhidden), 0.0);
  EXPECT_EQ(relative_error(dw_again, dw_cpu), 0.0);
}

TEST(OpsCrossEntropy, ReferenceGradientsMatchFiniteDifferences) {
  Rng rng(53);
  Tensor h = random_tensor({4, 3}, DType::f64, rng), w = random_tensor({7, 3}, DType::f64, rng);
  Tensor targets = random_targets(4, 7, rng, 3);
  auto loss = [&] { return ref::lm_head_cross_entropy(h, w, targets, false, nullptr).loss.mean(); };
  Tensor dw = Tensor::zeros({7, 3}, DType::f64);
  CrossEntropyResult r = ref::lm_head_cross_entropy(h, w, targets, true, &dw);
  EXPECT_LT(relative_error(r.dhidden, testing::numeric_gradient(h, loss)), 1e-7);
  EXPECT_LT(relative_error(dw, testing::numeric_gradient(w, loss)), 1e-7);
}

TEST(OpsCrossEntropy, LossOnlyAndAllIgnored) {
  Rng rng(54);
  Tensor h = random_tensor({5, 8}, DType::f32, rng), w = random_tensor({20, 8}, DType::f32, rng);
  Tensor targets = random_targets(5, 20, rng, 100);
  Tensor dw = Tensor::zeros({20, 8}, DType::f32);
  CrossEntropyResult loss_only = lm_head_cross_entropy(h, w, targets, false, &dw);
  EXPECT_FALSE(loss_only.dhidden.defined());
  EXPECT_EQ(relative_error(dw, Tensor::zeros({20, 8}, DType::f32)), 0.0);  // untouched
  EXPECT_NEAR(loss_only.loss.mean(), ref::lm_head_cross_entropy(h, w, targets, false, nullptr).loss.mean(), 1e-5);
  EXPECT_GT(loss_only.loss.mean(), 0.0);
  Tensor ignored = Tensor::from_vector({-1, -1, -1, -1, -1}, {5}, DType::i32);
  CrossEntropyResult none = lm_head_cross_entropy(h, w, ignored, true, &dw);
  EXPECT_EQ(none.loss.count(), 0);
  EXPECT_EQ(none.loss.mean(), 0.0);
  EXPECT_EQ(relative_error(none.dhidden, Tensor::zeros({5, 8}, DType::f32)), 0.0);
}

TEST(OpsCrossEntropy, BadTargetNamesTheRow) {
  Rng rng(55);
  Tensor h = random_tensor({3, 4}, DType::f32, rng), w = random_tensor({6, 4}, DType::f32, rng);
  Tensor targets = Tensor::from_vector({0, 6, 1}, {3}, DType::i32);
  EXPECT_ERROR_MENTIONS(lm_head_cross_entropy(h, w, targets, false, nullptr), "target 6 at row 1");
  EXPECT_ERROR_MENTIONS(lm_head_cross_entropy(h, random_tensor({6, 5}, DType::f32, rng), targets, false, nullptr),
                        "lm head weight");
  EXPECT_ERROR_MENTIONS(lm_head_cross_entropy(h, w, Tensor::from_vector({0, 1}, {2}, DType::i32), false, nullptr),
                        "cross-entropy targets");
}

}  // namespace
}  // namespace mamba::ops

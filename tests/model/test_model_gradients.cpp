// Whole-model gradients by a directional finite difference: moving every parameter along its
// gradient g by ±ε changes the loss by 2ε‖g‖² to first order. Covers the selective model and the
// LTI ablation (whose op has no transformers fixture).
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/rng.h"
#include "model/language_model.h"
#include "model/presets.h"
#include "ops/elementwise.h"

namespace mamba::model {
namespace {

double directional_mismatch(bool no_selection) {
  io::ModelConfig c = preset_config("tiny", "test");
  c.d_model = 32;
  c.d_inner = 64;
  c.dt_rank = 2;
  c.n_layer = 2;
  c.vocab_size = 40;
  c.no_selection = no_selection;
  auto model = LanguageModel::initialize(c, 7, Device::cpu);
  Rng rng(8);
  Tensor ids = Tensor::empty({2, 23}, DType::i32), targets = Tensor::empty({2, 23}, DType::i32);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    ids.data<int32_t>()[i] = int32_t(rng.below(40));
    targets.data<int32_t>()[i] = int32_t(rng.below(40));
  }
  model->enable_grad();
  model->forward_backward(ids, targets, true);
  double squared_norm = 0;
  for (const Parameter& p : model->parameters())
    for (double g : p.grad.to_double_vector()) squared_norm += g * g;
  const double eps = 1e-3 / std::sqrt(squared_norm);
  auto loss_moved = [&](double step) {
    for (Parameter& p : model->parameters()) {
      Tensor delta = p.grad.clone();
      ops::scale_(delta, step);
      ops::add_(p.value, delta);
    }
    model->parameters_changed();
    double loss = model->forward_backward(ids, targets, false).loss.mean();
    return loss;
  };
  double plus = loss_moved(eps), minus = loss_moved(-2 * eps);
  loss_moved(eps);
  double predicted = 2 * eps * squared_norm;
  return std::abs((plus - minus) - predicted) / predicted;
}

TEST(ModelGradients, SelectiveModelMatchesDirectionalDifference) { EXPECT_LT(directional_mismatch(false), 1e-3); }

TEST(ModelGradients, LtiAblationMatchesDirectionalDifference) { EXPECT_LT(directional_mismatch(true), 1e-3); }

// zero_grad(true) leaves the product gradients as they are and the next pass writes them: the
// same gradients as zeroing all (after a pass that left every gradient nonzero), for the
// selective model (tied and untied LM head) and the LTI ablation; the pass after it adds again.
TEST(ModelGradients, OverwritingPassEqualsZeroedPass) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    io::ModelConfig c = preset_config("tiny", "test");
    c.n_layer = 2;
    c.tie_embeddings = variant != 1;
    c.no_selection = variant == 2;
    std::unique_ptr<LanguageModel> models[2] = {LanguageModel::initialize(c, 3, Device::cpu),
                                                LanguageModel::initialize(c, 3, Device::cpu)};
    Rng rng(4);
    auto batch = [&] {
      Tensor t = Tensor::empty({2, 9}, DType::i32);
      for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = int32_t(rng.below(uint64_t(c.vocab_size)));
      return t;
    };
    const Tensor ids[3] = {batch(), batch(), batch()}, targets[3] = {batch(), batch(), batch()};
    for (int m = 0; m < 2; ++m) {
      models[m]->enable_grad();
      models[m]->forward_backward(ids[0], targets[0], true);  // stale gradients everywhere
      models[m]->zero_grad(/*next_pass_overwrites=*/m == 1);
      models[m]->forward_backward(ids[1], targets[1], true);
      models[m]->forward_backward(ids[2], targets[2], true);
    }
    for (size_t i = 0; i < models[0]->parameters().size(); ++i) {
      const Parameter& zeroed = models[0]->parameters()[i];
      EXPECT_EQ(models[1]->parameters()[i].grad.to_double_vector(), zeroed.grad.to_double_vector()) << zeroed.name;
    }
  }
}

TEST(ModelGradients, LtiAblationHasItsOwnParametersAndNoDecode) {
  io::ModelConfig c = preset_config("tiny", "test");
  c.no_selection = true;
  auto model = LanguageModel::initialize(c, 1, Device::cpu);
  EXPECT_NO_THROW(model->parameter("backbone.layers.0.mixer.lti_B"));
  EXPECT_THROW(model->parameter("backbone.layers.0.mixer.x_proj.weight"), Error);
  InferenceState state = model->new_state(1);
  EXPECT_THROW(model->prefill(state, Tensor::zeros({1, 4}, DType::i32)), Error);
}

}  // namespace
}  // namespace mamba::model

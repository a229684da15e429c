// The whole Mamba-1 model against transformers' MambaForCausalLM (fixtures/mamba1*).
#include <gtest/gtest.h>

#include "core/threads.h"
#include "fixtures.h"
#include "generate/generator.h"
#include "generate/state_file.h"
#include "io/safetensors.h"
#include "model/language_model.h"
#include "ops/argmax.h"

namespace mamba::model {
namespace {

Tensor rows_of(const Tensor& t, int64_t row) { return t.slice(row, row + 1); }

class Mamba1Golden : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_FIXTURES();
    golden_ = io::read_safetensors(fixture_path("mamba1_golden.safetensors")).tensors;
  }
  Tensor golden(const std::string& name) { return golden_.at(name); }
  std::map<std::string, Tensor> golden_;
};

TEST_F(Mamba1Golden, LogitsMatchTransformersInBothCheckpointLayouts) {
  for (const char* dir : {"mamba1", "mamba1_original"}) {
    auto model = LanguageModel::load(fixture_path(dir), LoadOptions{});
    Tensor logits = model->forward(golden("input_ids"));
    EXPECT_LT(relative_error(logits, golden("logits")), 1e-4) << dir;
  }
}

TEST_F(Mamba1Golden, Bf16WeightsStayWithinTwoPercent) {
  LoadOptions options;
  options.keep_stored_dtype = false;
  options.weight_dtype = DType::bf16;
  auto model = LanguageModel::load(fixture_path("mamba1"), options);
  EXPECT_EQ(model->parameter("backbone.layers.0.mixer.in_proj.weight").value.dtype(), DType::bf16);
  double err = relative_error(model->forward(golden("input_ids")), golden("logits"));
  EXPECT_LT(err, 2e-2);
  EXPECT_GT(err, 0);  // really ran in bf16
}

TEST_F(Mamba1Golden, GreedyGenerationAndStepLogits) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  Tensor prompt = golden("gen_prompt");
  std::vector<int32_t> ids;
  for (double v : prompt.to_double_vector()) ids.push_back(int32_t(v));
  generate::GenerateOptions options;
  options.max_new_tokens = 24;
  options.sampling.temperature = 0;
  options.ignore_eos = true;
  auto out = generate::generate(*model, {ids}, options);
  std::vector<double> expected = golden("gen_tokens").to_double_vector();
  ASSERT_EQ(out[0].size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(out[0][i], int32_t(expected[i])) << "token " << i;

  // Step logits: row s produced token s.
  InferenceState state = model->new_state(1);
  Tensor step_logits = golden("gen_step_logits");
  Tensor logits = model->prefill(state, prompt);
  for (int64_t s = 0; s < 4; ++s) {
    EXPECT_LT(relative_error(logits, rows_of(step_logits, s)), 1e-4) << "step " << s;
    Tensor token = Tensor::from_vector({expected[size_t(s)]}, {1}, DType::i32);
    logits = model->step(state, token);
  }
}

// greedy_steps (each step's argmax the next step's input) gives transformers' greedy tokens; its
// first ids are checked like step's, and a negative count is an error.
TEST_F(Mamba1Golden, GreedyStepsGiveTheGreedyTokens) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  const std::vector<double> expected = golden("gen_tokens").to_double_vector();
  InferenceState state = model->new_state(1);
  const int64_t vocab = model->config().vocab_size;
  const Tensor first = ops::argmax_rows(model->prefill(state, golden("gen_prompt")), vocab);
  ASSERT_EQ(int32_t(first.item(0)), int32_t(expected[0]));
  const int64_t steps = int64_t(expected.size()) - 1;
  const Tensor chosen = model->greedy_steps(state, first, steps);
  ASSERT_EQ(chosen.shape(), (Shape{steps, 1}));
  EXPECT_EQ(chosen.dtype(), DType::i32);
  for (int64_t s = 0; s < steps; ++s)
    EXPECT_EQ(int32_t(chosen.item(s)), int32_t(expected[size_t(s + 1)])) << "step " << s;

  InferenceState other = model->new_state(1);
  EXPECT_THROW(model->greedy_steps(other, Tensor::from_vector({512}, {1}, DType::i32), 2), Error);
  EXPECT_THROW(model->greedy_steps(other, first, -1), Error);
}

TEST_F(Mamba1Golden, PrefillAndStepsEqualOneForward) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  Tensor ids = golden("input_ids");  // [2, 33]
  Tensor full = model->forward(ids);
  const int64_t length = ids.size(1), prefix = 20, vocab = model->vocab_rows();
  Tensor ids32 = ids.to(DType::i32);
  Tensor head = Tensor::empty({2, prefix}, DType::i32);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < prefix; ++t) head.data<int32_t>()[b * prefix + t] = ids32.data<int32_t>()[b * length + t];
  for (int64_t chunk : {int64_t(2048), int64_t(7)}) {
    InferenceState state = model->new_state(2);
    Tensor logits = model->prefill(state, head, {}, chunk);
    for (int64_t t = prefix - 1; t < length; ++t) {
      Tensor expected = Tensor::empty({2, vocab}, DType::f32);
      for (int64_t b = 0; b < 2; ++b)
        expected.slice(b, b + 1).copy_from(full.view({2 * length, vocab}).slice(b * length + t, b * length + t + 1));
      ASSERT_LT(relative_error(logits, expected), 1e-5) << "position " << t << " chunk " << chunk;
      if (t + 1 == length) break;
      Tensor next = Tensor::empty({2}, DType::i32);
      for (int64_t b = 0; b < 2; ++b) next.data<int32_t>()[b] = ids32.data<int32_t>()[b * length + t + 1];
      logits = model->step(state, next);
    }
  }
}

TEST_F(Mamba1Golden, RaggedBatchEqualsSeparatePrompts) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  std::vector<double> all = golden("input_ids").to_double_vector();
  std::vector<int32_t> a(all.begin(), all.begin() + 9), b(all.begin() + 33, all.begin() + 33 + 30);
  generate::GenerateOptions options;
  options.max_new_tokens = 6;
  options.sampling.temperature = 0.8;
  options.sampling.seed = 5;
  options.ignore_eos = true;
  options.prefill_chunk = 8;
  auto together = generate::generate(*model, {a, b}, options);
  auto first = generate::generate(*model, {a}, options);
  EXPECT_EQ(together[0], first[0]);
  // Sequence 1 draws from stream 1, so compare it through a batch where it is second too.
  auto again = generate::generate(*model, {b, b}, options);
  EXPECT_EQ(together[1], again[1]);
}

TEST_F(Mamba1Golden, SameSeedSameTokensAtAnyThreadCount) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  std::vector<int32_t> prompt = {5, 17, 300, 2};
  generate::GenerateOptions options;
  options.max_new_tokens = 12;
  options.sampling.temperature = 1.0;
  options.sampling.top_p = 0.9;
  options.sampling.seed = 42;
  options.ignore_eos = true;
  set_num_threads(1);
  auto one = generate::generate(*model, {prompt}, options);
  set_num_threads(2);
  auto two = generate::generate(*model, {prompt}, options);
  EXPECT_EQ(one, two);
}

TEST_F(Mamba1Golden, GradientsMatchTransformers) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  auto train = io::read_safetensors(fixture_path("mamba1_train.safetensors")).tensors;
  Tensor ids = train.at("input_ids").to(DType::i32);  // [2, 24]
  const int64_t batch = ids.size(0), length = ids.size(1);
  Tensor targets = Tensor::empty(ids.shape(), DType::i32);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < length; ++t)
      targets.data<int32_t>()[b * length + t] = t + 1 < length ? ids.data<int32_t>()[b * length + t + 1] : -1;
  model->enable_grad();
  LossResult r = model->forward_backward(ids, targets, true);
  EXPECT_EQ(r.loss.count(), batch * (length - 1));
  for (const Parameter& p : model->parameters()) {
    const Tensor& expected = train.at("grad." + p.name);
    EXPECT_LT(relative_error(p.grad, expected), 1e-4) << p.name;
  }
}

TEST_F(Mamba1Golden, SavedStateContinuesExactly) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  std::vector<int32_t> a = {7, 99, 12, 400, 3, 3, 81}, b = {250, 6, 18};
  std::vector<int32_t> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  generate::GenerateOptions options;
  options.sampling.temperature = 0;
  options.ignore_eos = true;
  options.max_new_tokens = 0;
  InferenceState state = model->new_state(1);
  generate::generate(*model, {a}, options, {}, nullptr, &state);
  std::string path = ::testing::TempDir() + "/mamba1_state.safetensors";
  generate::save_state(path, *model, state);
  InferenceState restored = generate::load_state(path, *model);
  options.max_new_tokens = 6;
  auto continued = generate::generate(*model, {b}, options, {}, nullptr, &restored);
  auto direct = generate::generate(*model, {ab}, options);
  EXPECT_EQ(continued[0], direct[0]);
}

TEST_F(Mamba1Golden, OutOfRangeIdIsAClearError) {
  auto model = LanguageModel::load(fixture_path("mamba1"), LoadOptions{});
  Tensor ids = Tensor::from_vector({1, 2, 512}, {1, 3}, DType::i32);
  EXPECT_THROW(model->forward(ids), Error);
}

}  // namespace
}  // namespace mamba::model

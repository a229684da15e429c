// The whole model on the GPU against the same model on the CPU: logits, prefill + decode steps,
// training gradients and optimiser steps. A random model (no fixtures needed on the GPU machine).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/rng.h"
#include "cuda_test_util.h"
#include "generate/generator.h"
#include "generate/sampler.h"
#include "model/language_model.h"
#include "model/presets.h"
#include "ops/argmax.h"
#include "train/optimizer.h"

namespace mamba::model {
namespace {

io::ModelConfig small_config() {
  io::ModelConfig c = preset_config("tiny", "test");
  c.d_model = 48;  // D = 96: not a multiple of the kernels' channel blocks
  c.n_layer = 2;
  c.d_inner = 96;
  c.dt_rank = 3;
  c.vocab_size = 203;
  c.pad_vocab_size_multiple = 8;
  return c;
}

Tensor random_ids(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  Tensor ids = Tensor::empty({batch, length}, DType::i32);
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
  return ids;
}

TEST(CudaModel, LogitsAndDecodeMatchCpu) {
  SKIP_WITHOUT_GPU();
  auto cpu = LanguageModel::initialize(small_config(), 3, Device::cpu);
  auto gpu = LanguageModel::initialize(small_config(), 3, Device::cuda);
  Tensor ids = random_ids(3, 37, 203, 9);
  EXPECT_LT(relative_error(gpu->forward(ids), cpu->forward(ids)), 1e-4);

  InferenceState cpu_state = cpu->new_state(3), gpu_state = gpu->new_state(3);
  Tensor lengths = Tensor::from_vector({37, 5, 20}, {3}, DType::i32);
  EXPECT_LT(relative_error(gpu->prefill(gpu_state, ids, lengths, 16), cpu->prefill(cpu_state, ids, lengths, 16)), 1e-4);
  // Step 1 runs eagerly, step 2 records the CUDA graph, later steps replay it.
  for (int step = 0; step < 6; ++step) {
    Tensor next = random_ids(1, 3, 203, 100 + uint64_t(step)).view({3});
    ASSERT_LT(relative_error(gpu->step(gpu_state, next), cpu->step(cpu_state, next)), 1e-4) << "step " << step;
  }
  EXPECT_THROW(gpu->step(gpu_state, Tensor::from_vector({1, 5000, 2}, {3}, DType::i32)), Error);
}

// bf16 weights: the GPU keeps activations in bf16 between kernels (the CPU in float32); logits,
// prefill and decode agree within the bf16 tolerance. Batch 2 decodes with the fused in-projection
// kernel, batch 6 with the norm, product and conv-step kernels (more than 4 sequences).
TEST(CudaModel, Bf16WeightsMatchCpu) {
  SKIP_WITHOUT_GPU();
  auto cpu = LanguageModel::initialize(small_config(), 8, Device::cpu);
  auto gpu = LanguageModel::initialize(small_config(), 8, Device::cuda);
  cpu->convert_weight_matrices(DType::bf16);
  gpu->convert_weight_matrices(DType::bf16);
  for (int64_t batch : {2, 6}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    Tensor ids = random_ids(batch, 41, 203, 16 + uint64_t(batch));
    EXPECT_LT(relative_error(gpu->forward(ids), cpu->forward(ids)), 1e-2);
    InferenceState a = gpu->new_state(batch), b = cpu->new_state(batch);
    EXPECT_LT(relative_error(gpu->prefill(a, ids), cpu->prefill(b, ids)), 1e-2);
    for (int step = 0; step < 3; ++step) {
      Tensor next = random_ids(1, batch, 203, 300 + uint64_t(step)).view({batch});
      EXPECT_LT(relative_error(gpu->step(a, next), cpu->step(b, next)), 1e-2) << "step " << step;
    }
  }
}

// Replayed steps give exactly what eager steps give, and changed weights are picked up (the
// recording is made again).
TEST(CudaModel, RecordedStepsEqualEagerSteps) {
  SKIP_WITHOUT_GPU();
  auto recorded = LanguageModel::initialize(small_config(), 7, Device::cuda);
  auto eager = LanguageModel::initialize(small_config(), 7, Device::cuda);
  eager->set_inference_recording(false);
  Tensor prompt = random_ids(2, 9, 203, 15);
  InferenceState a = recorded->new_state(2), b = eager->new_state(2);
  recorded->prefill(a, prompt);
  eager->prefill(b, prompt);
  for (int step = 0; step < 8; ++step) {
    if (step == 5)
      for (LanguageModel* m : {recorded.get(), eager.get()}) {
        m->parameter("backbone.layers.1.mixer.out_proj.weight").value.zero_();
        m->parameters_changed();
      }
    Tensor next = random_ids(1, 2, 203, 200 + uint64_t(step)).view({2});
    ASSERT_EQ(relative_error(recorded->step(a, next), eager->step(b, next)), 0.0) << "step " << step;
  }
}

// greedy_steps (the ids stay on the GPU between steps, the host waits once) chooses what the loop
// of steps with each step's ids copied back chooses, and leaves the same states, at batch 1 and 3.
TEST(CudaModel, GreedyStepsEqualTheStepLoop) {
  SKIP_WITHOUT_GPU();
  auto model = LanguageModel::initialize(small_config(), 11, Device::cuda);
  model->convert_weight_matrices(DType::bf16);
  const int64_t vocab = model->config().vocab_size;
  for (int64_t batch : {1, 3}) {
    Tensor prompt = random_ids(batch, 9, 203, 31 + uint64_t(batch));
    InferenceState a = model->new_state(batch), b = model->new_state(batch);
    const Tensor first = ops::argmax_rows(model->prefill(a, prompt), vocab).to(Device::cpu);
    model->prefill(b, prompt);
    const Tensor chosen = model->greedy_steps(a, first, 7);
    Tensor ids = first;
    for (int64_t s = 0; s < 7; ++s) {
      ids = ops::argmax_rows(model->step(b, ids), vocab).to(Device::cpu);
      for (int64_t i = 0; i < batch; ++i)
        EXPECT_EQ(chosen.item(s * batch + i), ids.item(i)) << "batch " << batch << ", step " << s << ", sequence " << i;
    }
    for (size_t i = 0; i < a.conv.size(); ++i) {
      EXPECT_EQ(a.conv[i].to(Device::cpu).to_double_vector(), b.conv[i].to(Device::cpu).to_double_vector());
      EXPECT_EQ(a.ssm[i].to(Device::cpu).to_double_vector(), b.ssm[i].to(Device::cpu).to_double_vector());
    }
  }
}

// Greedy generation on the GPU takes each token where the logits are (argmax_rows, only ids come
// back); the tokens are those the host's sampler picks from the same logits copied back (the same
// ragged batch, prompts of 6 and 2 tokens, stepped the same way).
TEST(CudaModel, GreedyGenerationChoosesOnTheGpuAsTheSamplerWould) {
  SKIP_WITHOUT_GPU();
  auto model = LanguageModel::initialize(small_config(), 13, Device::cuda);
  model->convert_weight_matrices(DType::bf16);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 99, 3, 150, 42}, {7, 200}};
  generate::GenerateOptions options;
  options.max_new_tokens = 9;
  options.sampling.temperature = 0;
  options.ignore_eos = true;
  const auto generated = generate::generate(*model, prompts, options);

  const int64_t vocab = model->config().vocab_size, rows = model->vocab_rows();
  InferenceState state = model->new_state(2);
  Tensor ids = Tensor::from_vector({5, 17, 99, 3, 150, 42, 7, 200, 0, 0, 0, 0}, {2, 6}, DType::i32);
  Tensor logits = model->prefill(state, ids, Tensor::from_vector({6, 2}, {2}, DType::i32));
  std::vector<std::vector<int32_t>> context = prompts;
  Rng rng(1);
  for (int64_t s = 0; s < options.max_new_tokens; ++s) {
    const Tensor host = logits.to(Device::cpu);
    Tensor next = Tensor::empty({2}, DType::i32);
    for (int64_t b = 0; b < 2; ++b) {
      const int32_t token =
          generate::sample_token(host.data<float>() + b * rows, vocab, context[size_t(b)], options.sampling, rng);
      ASSERT_EQ(generated[size_t(b)].size(), size_t(options.max_new_tokens));
      EXPECT_EQ(generated[size_t(b)][size_t(s)], token) << "prompt " << b << ", token " << s;
      context[size_t(b)].push_back(token);
      next.data<int32_t>()[b] = token;
    }
    logits = model->step(state, next);
  }
}

// Equal element for element (NaN equals nothing).
bool identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to(Device::cpu).to_double_vector() == b.to(Device::cpu).to_double_vector();
}

void expect_same_states(const InferenceState& a, const InferenceState& b, const std::string& when) {
  for (size_t i = 0; i < a.conv.size(); ++i) {
    EXPECT_TRUE(identical(a.conv[i], b.conv[i])) << when << ", conv state " << i;
    EXPECT_TRUE(identical(a.ssm[i], b.ssm[i])) << when << ", ssm state " << i;
  }
}

// Recorded prefill chunks give exactly what eager ones give: from fresh states and from states
// that went on decoding, when the recording is made (the second full chunk of a shape) and
// replayed, with the scan's length split (chunks of 1024 at batch 1 over 96 channels), around
// chunks of other shapes, and after the weights change (f32 and bf16 weights).
void expect_recorded_prefill_equals_eager(DType weights) {
  auto recorded = LanguageModel::initialize(small_config(), 8, Device::cuda);
  auto eager = LanguageModel::initialize(small_config(), 8, Device::cuda);
  for (LanguageModel* m : {recorded.get(), eager.get()}) m->convert_weight_matrices(weights);
  eager->set_inference_recording(false);
  struct Case {
    int64_t batch, length, chunk;
    bool new_state;
  };
  // Chunks: 1024 ×3 + 70 (eager, recorded, replayed, another shape), then replays from a state
  // that decoded; batch 3 with chunks of 16 (its own recording, from eager to replays).
  const Case cases[] = {{1, 3142, 1024, true}, {1, 2100, 1024, false}, {3, 50, 16, true}, {3, 64, 16, false}};
  InferenceState a, b;
  uint64_t seed = 40;
  for (const Case& c : cases) {
    if (c.new_state) a = recorded->new_state(c.batch), b = eager->new_state(c.batch);
    // A longer scan between chunks needs more split scratch than the recording took: a recording
    // keeps its own blocks (a scratch grown in place would leave the replays writing freed memory).
    if (!c.new_state) recorded->forward(random_ids(1, 9000, 203, ++seed), /*last_only=*/false);
    const std::string when =
        std::string(dtype_name(weights)) + " prefill of " + std::to_string(c.batch) + " x " + std::to_string(c.length);
    Tensor prompt = random_ids(c.batch, c.length, 203, ++seed);
    // Handles to the states before the prefill keep their blocks alive, so a state the prefill
    // replaced cannot come back at the same address from the block cache.
    const Tensor recorded_conv = a.conv[0], eager_conv = b.conv[0];
    ASSERT_TRUE(identical(recorded->prefill(a, prompt, {}, c.chunk), eager->prefill(b, prompt, {}, c.chunk))) << when;
    expect_same_states(a, b, when);
    // Replayed chunks write the caller's states in place, eager ones replace them: a prompt of full
    // chunks after the recording (the last case) must have gone through the graph.
    if (&c == &cases[3]) {
      EXPECT_EQ(a.conv[0].raw(), recorded_conv.raw()) << when << ": the chunks were not replayed";
      EXPECT_NE(b.conv[0].raw(), eager_conv.raw()) << when;
    }
    for (int step = 0; step < 3; ++step) {
      Tensor next = random_ids(1, c.batch, 203, ++seed).view({c.batch});
      ASSERT_TRUE(identical(recorded->step(a, next), eager->step(b, next))) << when << ", step " << step;
    }
  }
  for (LanguageModel* m : {recorded.get(), eager.get()}) {
    m->parameter("backbone.layers.0.mixer.in_proj.weight").value.zero_();
    m->parameters_changed();
  }
  for (int round = 0; round < 3; ++round) {
    Tensor prompt = random_ids(3, 32, 203, ++seed);
    const Tensor recorded_conv = a.conv[0];
    ASSERT_TRUE(identical(recorded->prefill(a, prompt, {}, 16), eager->prefill(b, prompt, {}, 16)))
        << "changed weights, round " << round;
    expect_same_states(a, b, "changed weights");
    // Round 0: its first chunk eager (new weights), its second recorded; then replays only.
    if (round > 0) {
      EXPECT_EQ(a.conv[0].raw(), recorded_conv.raw()) << "changed weights, round " << round;
    }
  }
}

TEST(CudaModel, RecordedPrefillEqualsEagerPrefill) {
  SKIP_WITHOUT_GPU();
  expect_recorded_prefill_equals_eager(DType::f32);
  expect_recorded_prefill_equals_eager(DType::bf16);
}

// One forward+backward of the same batch on both models: loss and every gradient within tolerance.
void expect_same_training_pass(LanguageModel& cpu, LanguageModel& gpu, int64_t length, uint64_t seed,
                               double loss_tolerance, double grad_tolerance) {
  Tensor ids = random_ids(2, length, 203, seed);
  Tensor targets = random_ids(2, length, 203, seed + 1);
  cpu.enable_grad();
  gpu.enable_grad();
  LossResult a = cpu.forward_backward(ids, targets, true);
  LossResult b = gpu.forward_backward(ids, targets, true);
  EXPECT_NEAR(b.loss.mean(), a.loss.mean(), loss_tolerance * std::abs(a.loss.mean()));
  for (size_t i = 0; i < cpu.parameters().size(); ++i)
    EXPECT_LT(relative_error(gpu.parameters()[i].grad, cpu.parameters()[i].grad), grad_tolerance)
        << cpu.parameters()[i].name;
}

TEST(CudaModel, GradientsMatchCpu) {
  SKIP_WITHOUT_GPU();
  auto cpu = LanguageModel::initialize(small_config(), 4, Device::cpu);
  auto gpu = LanguageModel::initialize(small_config(), 4, Device::cuda);
  expect_same_training_pass(*cpu, *gpu, 29, 11, 1e-4, 1e-4);
}

// Five AdamW steps with gradient clipping, the optimiser state on each model's device: the loss
// sequences and the final weights agree.
TEST(CudaModel, TrainingStepsMatchCpu) {
  SKIP_WITHOUT_GPU();
  auto cpu = LanguageModel::initialize(small_config(), 5, Device::cpu);
  auto gpu = LanguageModel::initialize(small_config(), 5, Device::cuda);
  train::OptimizerOptions options;
  cpu->enable_grad();
  gpu->enable_grad();
  train::Optimizer cpu_opt(options, cpu->parameters()), gpu_opt(options, gpu->parameters());
  for (int step = 0; step < 5; ++step) {
    Tensor ids = random_ids(2, 33, 203, 20 + uint64_t(step));
    Tensor targets = random_ids(2, 33, 203, 40 + uint64_t(step));
    double losses[2], norms[2];
    int k = 0;
    for (auto* pair : {&cpu, &gpu}) {
      LanguageModel& m = **pair;
      m.zero_grad(/*next_pass_overwrites=*/k == 1 && step % 2 == 0);  // the GPU's products overwrite
      losses[k] = m.forward_backward(ids, targets, true).loss.mean();
      norms[k] = (k == 0 ? cpu_opt : gpu_opt).step(m.parameters(), 3e-3, 0.5);
      m.parameters_changed(/*compute_copies_current=*/true);
      ++k;
    }
    EXPECT_NEAR(losses[1], losses[0], 1e-4 * losses[0]) << "step " << step;
    EXPECT_NEAR(norms[1], norms[0], 1e-4 * norms[0]) << "step " << step;
  }
  for (size_t i = 0; i < cpu->parameters().size(); ++i)
    EXPECT_LT(relative_error(gpu->parameters()[i].value, cpu->parameters()[i].value), 1e-4)
        << cpu->parameters()[i].name;
  io::TensorMap state = gpu_opt.state_dict();
  EXPECT_EQ(state.at("exp_avg.backbone.norm_f.weight").device(), Device::cpu);
}

// Training passes replayed from a CUDA graph give the losses, predictions and weights of eager
// passes: two micro-batches per step (the second accumulates onto the first's gradients and its
// loss must not overwrite the first's), the first overwriting the product gradients at some steps
// (recorded anew when that changes), a batch of another shape (recorded anew) and an evaluation
// pass without gradients in between.
TEST(CudaModel, RecordedTrainingMatchesEager) {
  SKIP_WITHOUT_GPU();
  auto eager = LanguageModel::initialize(small_config(), 7, Device::cuda);
  auto recorded = LanguageModel::initialize(small_config(), 7, Device::cuda);
  eager->set_training_recording(false);
  train::OptimizerOptions options;
  train::Optimizer eager_opt(options, (eager->enable_grad(), eager->parameters()));
  train::Optimizer recorded_opt(options, (recorded->enable_grad(), recorded->parameters()));
  for (int step = 0; step < 6; ++step) {
    const int64_t length = step == 4 ? 17 : 33;
    double losses[2][2];
    Tensor predictions[2];
    int k = 0;
    for (auto* pair : {&eager, &recorded}) {
      LanguageModel& m = **pair;
      m.zero_grad(/*next_pass_overwrites=*/step % 3 != 1);
      LossResult first = m.forward_backward(random_ids(2, length, 203, 60 + uint64_t(step)),
                                            random_ids(2, length, 203, 70 + uint64_t(step)), true);
      LossResult second = m.forward_backward(random_ids(2, length, 203, 80 + uint64_t(step)),
                                             random_ids(2, length, 203, 90 + uint64_t(step)), true);
      losses[k][0] = first.loss.mean();
      losses[k][1] = second.loss.mean();
      predictions[k] = second.predictions;
      (k == 0 ? eager_opt : recorded_opt).step(m.parameters(), 3e-3, 0.5);
      m.parameters_changed(/*compute_copies_current=*/true);
      if (step == 2) m.forward_backward(random_ids(2, 33, 203, 99), random_ids(2, 33, 203, 98), false);
      ++k;
    }
    EXPECT_NEAR(losses[1][0], losses[0][0], 1e-6 * losses[0][0]) << "step " << step;
    EXPECT_NEAR(losses[1][1], losses[0][1], 1e-6 * losses[0][1]) << "step " << step;
    EXPECT_EQ(predictions[1].to_double_vector(), predictions[0].to_double_vector()) << "step " << step;
  }
  for (size_t i = 0; i < eager->parameters().size(); ++i)
    EXPECT_LT(relative_error(recorded->parameters()[i].value, eager->parameters()[i].value), 1e-5)
        << eager->parameters()[i].name;
}

// A bad id or target is named whether the batch comes from the host (checked there, before its
// upload) or already lies on the GPU; a good batch trains as before afterwards.
TEST(CudaModel, BadIdsAndTargetsAreNamed) {
  SKIP_WITHOUT_GPU();
  auto gpu = LanguageModel::initialize(small_config(), 6, Device::cuda);
  gpu->enable_grad();
  const int64_t vocab = gpu->vocab_rows();
  Tensor ids = random_ids(2, 9, 203, 1), targets = random_ids(2, 9, 203, 2);
  Tensor bad_ids = ids.clone(), bad_targets = targets.clone();
  bad_ids.data<int32_t>()[12] = int32_t(vocab);
  bad_targets.data<int32_t>()[5] = -2;
  auto error_of = [&](const Tensor& i, const Tensor& t) -> std::string {
    try {
      gpu->forward_backward(i, t, true);
    } catch (const Error& e) {
      return e.what();
    }
    return "nothing thrown";
  };
  const std::string bad_id = "token id " + std::to_string(vocab) + " at position 12";
  EXPECT_NE(error_of(bad_ids, targets).find(bad_id), std::string::npos);
  EXPECT_NE(error_of(bad_ids.to(Device::cuda), targets.to(Device::cuda)).find(bad_id), std::string::npos);
  EXPECT_NE(error_of(ids, bad_targets).find("target -2 at row 5"), std::string::npos);
  EXPECT_NE(error_of(ids.to(Device::cuda), bad_targets.to(Device::cuda)).find("target -2 at row 5"), std::string::npos);
  EXPECT_TRUE(std::isfinite(gpu->forward_backward(ids, targets, true).loss.mean()));
}

// Mixed precision: bf16 products from float32 master weights give the float32 loss within the bf16
// tolerance (1e-2) and the gradients within 3e-2 (a gradient passes through four to six chained
// bf16 products per layer; the small dt path shows about 1.2e-2), an optimiser step rewrites the bf16
// copies in place, and parameters_changed remakes them.
TEST(CudaModel, MixedPrecisionMatchesFloat32) {
  SKIP_WITHOUT_GPU();
  auto cpu = LanguageModel::initialize(small_config(), 6, Device::cpu);
  auto gpu = LanguageModel::initialize(small_config(), 6, Device::cuda);
  gpu->use_mixed_precision();
  expect_same_training_pass(*cpu, *gpu, 31, 13, 1e-2, 3e-2);

  Parameter& in_proj = gpu->parameter("backbone.layers.0.mixer.in_proj.weight");
  ASSERT_EQ(in_proj.compute.dtype(), DType::bf16);
  train::Optimizer optimizer({}, gpu->parameters());
  const void* compute_memory = in_proj.compute.raw();
  optimizer.step(gpu->parameters(), 1e-2, 1.0);
  gpu->parameters_changed(/*compute_copies_current=*/true);
  ASSERT_EQ(in_proj.compute.raw(), compute_memory);
  for (const Parameter& p : gpu->parameters()) {
    if (p.compute.defined()) {
      EXPECT_EQ(p.compute.to_double_vector(), p.value.to(DType::bf16).to_double_vector()) << p.name;
    }
  }
  in_proj.value.zero_();
  gpu->parameters_changed();
  for (double v : in_proj.compute.to_double_vector()) ASSERT_EQ(v, 0.0);
}

}  // namespace
}  // namespace mamba::model

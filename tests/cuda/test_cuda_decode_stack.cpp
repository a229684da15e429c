// ops::decode_stack_step (every layer of a one-sequence decode step in one kernel) against the
// float64 reference ops composed layer by layer, over two chained steps, and inside the model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "cuda_test_util.h"
#include "model/language_model.h"
#include "model/presets.h"
#include "ops/causal_conv1d.h"
#include "ops/decode_stack.h"
#include "ops/in_projection_step.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/selective_scan.h"

namespace mamba::cuda_test {
namespace {

Tensor cpu64(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape, DType::f64); }

// Columns [begin, end) of each of the rows of a row-major matrix `width` wide.
std::vector<double> columns(const std::vector<double>& v, int64_t width, int64_t begin, int64_t end) {
  std::vector<double> out;
  for (int64_t row = 0; row * width < int64_t(v.size()); ++row)
    out.insert(out.end(), v.begin() + row * width + begin, v.begin() + row * width + end);
  return out;
}

struct Geometry {
  int d, E, N, R, K, layers;
  bool conv_bias;
};

// One layer's parameters and states as the GPU reads them, in float64.
struct HostLayer {
  std::vector<double> norm_w, in_proj, conv_w, conv_b, x_proj, dt_proj, dt_bias, A, D, out_proj, conv_state, ssm_state;
};

// Past d 1024, E 2048 and rank 64 the products' weights shrink as 1/sqrt(fan-in), so that the
// activations (and how far a rounding moves them) stay as at the smaller shapes.
HostLayer random_layer(Rng& rng, const Geometry& g, int rows) {
  const int J = g.R + 2 * g.N;
  const double in_range = 0.1 * std::min(1.0, std::sqrt(1024.0 / g.d)),
               inner_range = 0.1 * std::min(1.0, std::sqrt(2048.0 / g.E)),
               dt_range = 0.3 * std::min(1.0, std::sqrt(64.0 / g.R));
  HostLayer h;
  h.norm_w = rounded(random_vector(rng, g.d, 0.5, 1.5), DType::f32);
  h.in_proj = rounded(random_vector(rng, 2 * int64_t(g.E) * g.d, -in_range, in_range), DType::bf16);
  h.conv_w = rounded(random_vector(rng, int64_t(g.E) * g.K, -0.5, 0.5), DType::f32);
  if (g.conv_bias) h.conv_b = rounded(random_vector(rng, g.E, -0.5, 0.5), DType::f32);
  h.x_proj = rounded(random_vector(rng, int64_t(J) * g.E, -inner_range, inner_range), DType::bf16);
  h.dt_proj = rounded(random_vector(rng, int64_t(g.E) * g.R, -dt_range, dt_range), DType::bf16);
  h.dt_bias = rounded(random_vector(rng, g.E, -3, -1), DType::f32);
  h.A = rounded(random_vector(rng, int64_t(g.E) * g.N, -4, -0.5), DType::f32);
  h.D = rounded(random_vector(rng, g.E, -1, 1), DType::f32);
  h.out_proj = rounded(random_vector(rng, int64_t(g.d) * g.E, -inner_range, inner_range), DType::bf16);
  h.conv_state = rounded(random_vector(rng, int64_t(rows) * g.E * (g.K - 1), -1, 1), DType::f32);
  h.ssm_state = rounded(random_vector(rng, int64_t(rows) * g.E * g.N, -1, 1), DType::f32);
  return h;
}

ops::DecodeStackLayer gpu_layer(const HostLayer& h, const Geometry& g, int rows) {
  const int J = g.R + 2 * g.N;
  return {on_gpu(h.norm_w, {g.d}, DType::f32),
          on_gpu(h.in_proj, {2 * g.E, g.d}, DType::bf16),
          on_gpu(h.conv_w, {g.E, g.K}, DType::f32),
          g.conv_bias ? on_gpu(h.conv_b, {g.E}, DType::f32) : Tensor(),
          ops::decode_stack_x_proj_blocks(on_gpu(h.x_proj, {J, g.E}, DType::bf16), g.d),
          on_gpu(h.dt_proj, {g.E, g.R}, DType::bf16),
          on_gpu(h.dt_bias, {g.E}, DType::f32),
          on_gpu(h.A, {g.E, g.N}, DType::f32),
          on_gpu(h.D, {g.E}, DType::f32),
          on_gpu(h.out_proj, {g.d, g.E}, DType::bf16),
          on_gpu(h.conv_state, {rows, g.E, g.K - 1}, DType::f32),
          on_gpu(h.ssm_state, {rows, g.E, g.N}, DType::f32)};
}

// One reference layer: returns its output; `residual` becomes s, the states advance. x', z, u, δ_low,
// B, C and y are rounded to bf16 where the op stores them (its definition in ops/decode_stack.h).
Tensor reference_layer(const Tensor& x, Tensor& residual, HostLayer& h, Tensor& conv_state, Tensor& ssm_state,
                       const Geometry& g) {
  const int J = g.R + 2 * g.N;
  const int64_t rows = x.size(0);
  const ops::NormOutputs n =
      ops::ref::add_norm_forward({x, residual, cpu64(h.norm_w, {g.d}), {}, 1e-5f, ops::NormKind::rms});
  residual = n.residual_out;
  const std::vector<double> xz =
      rounded(ops::ref::linear_forward(n.out, cpu64(h.in_proj, {2 * g.E, g.d}), {}).to_double_vector(), DType::bf16);
  const Tensor conv_out = ops::ref::causal_conv1d_step({cpu64(columns(xz, 2 * g.E, 0, g.E), {rows, g.E}),
                                                        cpu64(h.conv_w, {g.E, g.K}),
                                                        g.conv_bias ? cpu64(h.conv_b, {g.E}) : Tensor(),
                                                        {},
                                                        {},
                                                        true},
                                                       conv_state);
  const Tensor u = cpu64(rounded(conv_out.to_double_vector(), DType::bf16), {rows, g.E});
  const std::vector<double> dbc =
      rounded(ops::ref::linear_forward(u, cpu64(h.x_proj, {J, g.E}), {}).to_double_vector(), DType::bf16);
  ops::ScanInputs step;
  step.u = u;
  step.delta = cpu64(columns(dbc, J, 0, g.R), {rows, g.R});
  step.delta_proj = cpu64(h.dt_proj, {g.E, g.R});
  step.B = cpu64(columns(dbc, J, g.R, g.R + g.N), {rows, g.N});
  step.C = cpu64(columns(dbc, J, g.R + g.N, J), {rows, g.N});
  step.A = Tensor::from_vector(h.A, {g.E, g.N}, DType::f32);
  step.D = Tensor::from_vector(h.D, {g.E}, DType::f32);
  step.z = cpu64(columns(xz, 2 * g.E, g.E, 2 * g.E), {rows, g.E});
  step.delta_bias = Tensor::from_vector(h.dt_bias, {g.E}, DType::f32);
  step.delta_softplus = true;
  const Tensor y =
      cpu64(rounded(ops::ref::selective_state_update(step, ssm_state).to_double_vector(), DType::bf16), {rows, g.E});
  return ops::ref::linear_forward(y, cpu64(h.out_proj, {g.d, g.E}), {});
}

// The same layer as the model's layer-by-layer step runs it on the GPU (Mamba1Mixer::step's ops).
Tensor ops_layer(const Tensor& x, Tensor& residual, const ops::DecodeStackLayer& stack_layer, const Tensor& x_proj,
                 Tensor& conv_state, Tensor& ssm_state) {
  const ops::InProjectionOutputs in =
      ops::in_projection_step({{x, residual, stack_layer.norm_weight, {}, 1e-5f, ops::NormKind::rms},
                               stack_layer.in_proj,
                               {},
                               stack_layer.conv_weight,
                               stack_layer.conv_bias},
                              conv_state);
  residual = in.residual_out;
  ops::ScanInputs step;
  step.u = in.x_conv;
  step.delta_proj = stack_layer.dt_proj;
  step.A = stack_layer.A;
  step.D = stack_layer.D;
  step.z = in.z;
  step.delta_bias = stack_layer.dt_bias;
  step.delta_softplus = true;
  const Tensor y = ops::selective_state_update_packed(step, ops::linear_forward(in.x_conv, x_proj), ssm_state);
  return ops::linear_forward(y, stack_layer.out_proj);
}

// Two chained steps of `rows` sequences through the stack, against the reference and against the
// layer-by-layer GPU ops.
void check_stack(const Geometry& g, int rows) {
  SCOPED_TRACE("d " + std::to_string(g.d) + " E " + std::to_string(g.E) + " N " + std::to_string(g.N) + ", " +
               std::to_string(rows) + " rows");
  Rng rng(77 + uint64_t(g.d) + uint64_t(rows));
  std::vector<HostLayer> host;
  std::vector<ops::DecodeStackLayer> layers;
  std::vector<Tensor> ref_conv, ref_ssm, ops_conv, ops_ssm, x_proj;
  for (int l = 0; l < g.layers; ++l) {
    host.push_back(random_layer(rng, g, rows));
    layers.push_back(gpu_layer(host.back(), g, rows));
    ops_conv.push_back(layers.back().conv_state.clone());
    ops_ssm.push_back(layers.back().ssm_state.clone());
    x_proj.push_back(on_gpu(host.back().x_proj, {g.R + 2 * g.N, g.E}, DType::bf16));
    ref_conv.push_back(cpu64(host.back().conv_state, {rows, g.E, g.K - 1}));
    ref_ssm.push_back(cpu64(host.back().ssm_state, {rows, g.E, g.N}));
  }
  const Tensor x0 = on_gpu(rounded(random_vector(rng, rows * g.d, -1, 1), DType::bf16), {rows, g.d}, DType::bf16);
  ASSERT_TRUE(ops::decode_stack_fits(x0, layers));
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const std::vector<double> x = rounded(random_vector(rng, rows * g.d, -1, 1), DType::bf16);
    const auto gpu = ops::decode_stack_step(on_gpu(x, {rows, g.d}, DType::bf16), layers, 1e-5f);
    ASSERT_TRUE(gpu.has_value());
    Tensor h = cpu64(x, {rows, g.d}), residual, ops_h = on_gpu(x, {rows, g.d}, DType::bf16), ops_residual;
    for (int l = 0; l < g.layers; ++l) {
      h = reference_layer(h, residual, host[l], ref_conv[l], ref_ssm[l], g);
      ops_h = ops_layer(ops_h, ops_residual, layers[l], x_proj[l], ops_conv[l], ops_ssm[l]);
    }
    // Across chained layers and steps a bf16 rounding that goes the other way in one place moves
    // later values: on the H100 both paths' out was 0.63–1.49% off the reference here, equal to
    // four digits at every geometry and step but d 2560's first (1.38% against 1.25%). The
    // layer-by-layer ops round the same intermediates; the stack may be as far off as they are
    // (1.5× their error, at least 1e-2) and never more than 2%.
    auto bound = [](double ops_error) { return std::min(2e-2, std::max(1e-2, 1.5 * ops_error)); };
    const double out_ops = error_vs(ops_h, h.to_double_vector()), out_stack = error_vs(gpu->out, h.to_double_vector());
    std::printf("d %d, %d rows, step %d: out off the reference by %.4f (stack), %.4f (layer-by-layer ops)\n", g.d, rows,
                step, out_stack, out_ops);
    EXPECT_LT(out_stack, bound(out_ops)) << "layer-by-layer ops: " << out_ops;
    EXPECT_LT(error_vs(gpu->residual, residual.to_double_vector()), 1e-2);
    for (int l = 0; l < g.layers; ++l) {
      EXPECT_LT(error_vs(layers[l].conv_state, ref_conv[l].to_double_vector()), 1e-2) << "layer " << l;
      const double ssm_ops = error_vs(ops_ssm[l], ref_ssm[l].to_double_vector());
      EXPECT_LT(error_vs(layers[l].ssm_state, ref_ssm[l].to_double_vector()), bound(ssm_ops))
          << "layer " << l << ", layer-by-layer ops: " << ssm_ops;
    }
  }
}

// Geometries: one chunk a half of W_in (d 256), two full chunks (d 1024, N 8, conv width 3 without
// bias), the 130m shape's (d 768: chunks of 10 rows, the second partial; 96 blocks), and rows too
// long for the warps to hold one in registers (d 2560, expand 1: every W_in row through the ring).
// Several sequences (the tensor-core kernel): 3 rows (the mma's lower 8 only) and 16, at every
// geometry whose blocks own a multiple of 16 channels (d 256's own 8); d 2560 cuts W_in's and
// W_out's rows into 4 chunks of 640 and gives each block 4 column tiles.
TEST(CudaDecodeStack, MatchesTheLayerByLayerReference) {
  SKIP_WITHOUT_GPU();
  for (const Geometry& g : {Geometry{256, 512, 16, 16, 4, 3, true}, Geometry{1024, 2048, 8, 32, 3, 2, false},
                            Geometry{768, 1536, 16, 48, 4, 2, true}, Geometry{2560, 2560, 16, 32, 4, 2, true}})
    for (int rows : {1, 3, 16})
      if (rows == 1 || g.d > 256) check_stack(g, rows);
}

// The 1.4b shape's layers (d 2048, 128 blocks of 32 channels, W_in's rows in two chunks) at 9 rows
// (the mma's upper 8 partly filled) and 16.
TEST(CudaDecodeStack, SeveralRowsAtTheLargeShape) {
  SKIP_WITHOUT_GPU();
  for (int rows : {9, 16}) check_stack(Geometry{2048, 4096, 16, 128, 4, 2, true}, rows);
}

// What the kernel does not take it declines (the caller then runs the layers one by one): d not a
// multiple of 256, f32 weights, an odd δ rank.
TEST(CudaDecodeStack, DeclinesWhatItDoesNotTake) {
  SKIP_WITHOUT_GPU();
  Rng rng(5);
  const Geometry g{256, 512, 16, 16, 4, 1, true};
  const HostLayer h = random_layer(rng, g, 1);
  const Tensor x = on_gpu(random_vector(rng, g.d, -1, 1), {1, g.d}, DType::bf16);
  std::vector<ops::DecodeStackLayer> layers{gpu_layer(h, g, 1)};
  EXPECT_TRUE(ops::decode_stack_fits(x, layers));
  EXPECT_FALSE(ops::decode_stack_pays(x, layers));  // 8 KB of weights a block: latency-bound
  layers[0].out_proj = layers[0].out_proj.to(DType::f32);
  EXPECT_FALSE(ops::decode_stack_fits(x, layers));
  EXPECT_FALSE(ops::decode_stack_step(x, layers, 1e-5f).has_value());
  layers[0].in_proj = Tensor::empty({2 * g.E, g.d + 1}, DType::bf16, Device::cuda);
  EXPECT_THROW(ops::decode_stack_fits(x, layers), Error);  // a shape that disagrees is named, not declined
  // Several rows: not where a block owns 8 channels (its W_in rows would not fill whole mma tiles
  // of x and z rows), nor past 16 rows, nor with fewer than 8 states a channel.
  const Tensor x3 = on_gpu(random_vector(rng, 3 * g.d, -1, 1), {3, g.d}, DType::bf16);
  EXPECT_FALSE(ops::decode_stack_fits(x3, {gpu_layer(random_layer(rng, g, 3), g, 3)}));
  const Geometry g130m{768, 1536, 16, 48, 4, 1, true};
  const Tensor x16 = on_gpu(random_vector(rng, 16 * g130m.d, -1, 1), {16, g130m.d}, DType::bf16);
  const Tensor x17 = on_gpu(random_vector(rng, 17 * g130m.d, -1, 1), {17, g130m.d}, DType::bf16);
  EXPECT_TRUE(ops::decode_stack_fits(x16, {gpu_layer(random_layer(rng, g130m, 16), g130m, 16)}));
  EXPECT_FALSE(ops::decode_stack_fits(x17, {gpu_layer(random_layer(rng, g130m, 17), g130m, 17)}));
  const Geometry four_states{768, 1536, 4, 48, 4, 1, true};
  EXPECT_FALSE(ops::decode_stack_fits(x16, {gpu_layer(random_layer(rng, four_states, 16), four_states, 16)}));
  EXPECT_THROW(ops::decode_stack_fits(x16, {gpu_layer(random_layer(rng, g130m, 3), g130m, 3)}), Error);
}

// Which shapes the model runs as one kernel by default: those where a block streams enough weights
// a layer (1.4b: 402 KB; 130m: 76 KB; a d 256 layer, 8 KB, does not: DeclinesWhatItDoesNotTake),
// and for several rows also where the ring keeps at least 8 slots beside the staged activations
// (on the H100: 130m at 16 rows 10 slots, 1.4b at 8 rows 8, at 16 rows 5).
TEST(CudaDecodeStack, PaysWhereEachBlockStreamsEnoughWeights) {
  SKIP_WITHOUT_GPU();
  auto layer = [](int64_t d, int64_t E, int64_t R, int64_t rows = 1) {
    auto empty = [](Shape shape, DType dtype) { return Tensor::zeros(shape, dtype, Device::cuda); };
    const int64_t N = 16, K = 4;
    return ops::DecodeStackLayer{empty({d}, DType::f32),
                                 empty({2 * E, d}, DType::bf16),
                                 empty({E, K}, DType::f32),
                                 empty({E}, DType::f32),
                                 ops::decode_stack_x_proj_blocks(empty({R + 2 * N, E}, DType::bf16), d),
                                 empty({E, R}, DType::bf16),
                                 empty({E}, DType::f32),
                                 empty({E, N}, DType::f32),
                                 empty({E}, DType::f32),
                                 empty({d, E}, DType::bf16),
                                 empty({rows, E, K - 1}, DType::f32),
                                 empty({rows, E, N}, DType::f32)};
  };
  const Tensor x_large = Tensor::zeros({1, 2048}, DType::bf16, Device::cuda);
  const Tensor x_small = Tensor::zeros({1, 768}, DType::bf16, Device::cuda);
  const Tensor x_tiny = Tensor::zeros({1, 256}, DType::bf16, Device::cuda);
  EXPECT_TRUE(ops::decode_stack_pays(x_large, {layer(2048, 4096, 128)}));
  EXPECT_TRUE(ops::decode_stack_pays(x_small, {layer(768, 1536, 48)}));
  EXPECT_TRUE(ops::decode_stack_fits(x_tiny, {layer(256, 512, 16)}));
  EXPECT_FALSE(ops::decode_stack_pays(x_tiny, {layer(256, 512, 16)}));
  const Tensor x_small_16 = Tensor::zeros({16, 768}, DType::bf16, Device::cuda);
  const Tensor x_large_8 = Tensor::zeros({8, 2048}, DType::bf16, Device::cuda);
  const Tensor x_large_16 = Tensor::zeros({16, 2048}, DType::bf16, Device::cuda);
  EXPECT_TRUE(ops::decode_stack_pays(x_small_16, {layer(768, 1536, 48, 16)}));
  EXPECT_TRUE(ops::decode_stack_pays(x_large_8, {layer(2048, 4096, 128, 8)}));
  EXPECT_TRUE(ops::decode_stack_fits(x_large_16, {layer(2048, 4096, 128, 16)}));
  EXPECT_FALSE(ops::decode_stack_pays(x_large_16, {layer(2048, 4096, 128, 16)}));
}

// In the model: a bf16 model whose layers the kernel takes decodes its sequences as the CPU model
// does and as its own layer-by-layer steps do (eager step, recording, replays): one sequence at
// d 256 (the one-row kernel), three at d 768 (the tensor-core kernel).
TEST(CudaDecodeStack, ModelStepsMatchTheLayerByLayerSteps) {
  SKIP_WITHOUT_GPU();
  for (const auto& [d, batch] : {std::pair{256, 1}, std::pair{768, 3}}) {
    SCOPED_TRACE("d " + std::to_string(d) + ", batch " + std::to_string(batch));
    io::ModelConfig c = model::preset_config("tiny", "test");
    c.d_model = d;
    c.d_inner = 2 * d;
    c.dt_rank = d / 16;
    c.n_layer = d == 256 ? 3 : 2;
    c.vocab_size = 203;
    c.pad_vocab_size_multiple = 8;
    auto stacked = model::LanguageModel::initialize(c, 21, Device::cuda);
    auto layered = model::LanguageModel::initialize(c, 21, Device::cuda);
    auto cpu = model::LanguageModel::initialize(c, 21, Device::cpu);
    for (auto* m : {stacked.get(), layered.get(), cpu.get()}) m->convert_weight_matrices(DType::bf16);
    // Models this small are latency-bound: by default they step layer by layer.
    stacked->set_decode_stack(model::LanguageModel::DecodeStack::wherever_taken);
    layered->set_decode_stack(model::LanguageModel::DecodeStack::never);
    std::vector<double> prompt_ids;
    for (int i = 0; i < 6 * batch; ++i) prompt_ids.push_back(double((5 + 37 * i) % 203));
    Tensor prompt = Tensor::from_vector(prompt_ids, {batch, 6}, DType::i32);
    model::InferenceState a = stacked->new_state(batch), b = layered->new_state(batch), h = cpu->new_state(batch);
    stacked->prefill(a, prompt);
    layered->prefill(b, prompt);
    cpu->prefill(h, prompt);
    for (int step = 0; step < 5; ++step) {
      std::vector<double> ids;
      for (int r = 0; r < batch; ++r) ids.push_back(double((7 + 31 * step + 11 * r) % 203));
      Tensor next = Tensor::from_vector(ids, {batch}, DType::i32);
      const Tensor logits = stacked->step(a, next);
      EXPECT_LT(relative_error(logits, layered->step(b, next)), 1e-2) << "step " << step;
      EXPECT_LT(relative_error(logits, cpu->step(h, next)), 1e-2) << "step " << step;
    }
    for (size_t l = 0; l < a.ssm.size(); ++l) {
      EXPECT_LT(relative_error(a.ssm[l], b.ssm[l]), 1e-2) << "layer " << l;
      EXPECT_LT(relative_error(a.conv[l], b.conv[l]), 1e-2) << "layer " << l;
    }
  }
}

}  // namespace
}  // namespace mamba::cuda_test

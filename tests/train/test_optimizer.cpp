#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "core/threads.h"
#include "train/optimizer.h"

namespace mamba::train {
namespace {

model::Parameter make_parameter(const std::string& name, const std::vector<double>& value,
                                const std::vector<double>& grad, bool weight_decay) {
  Shape shape{int64_t(value.size())};
  return {name, Tensor::from_vector(value, shape, DType::f32), Tensor::from_vector(grad, shape, DType::f32),
          weight_decay, Tensor{}};
}

std::vector<double> random_values(Rng& rng, size_t n) {
  std::vector<double> v(n);
  for (double& x : v) x = rng.normal();
  return v;
}

void set_grad(model::Parameter& p, const std::vector<double>& grad) {
  p.grad.copy_from(Tensor::from_vector(grad, p.grad.shape(), DType::f32));
}

TEST(AdamW, MatchesTwoStepHandComputation) {
  // Two elements, two steps, lr 0.1, betas (0.9, 0.99), eps 1e-8, weight decay 0.1. Values computed
  // by hand (in double) from the textbook AdamW formulas:
  //   p1 = p0(1 − lr·wd) − lr·m̂1/(√v̂1 + eps), m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ).
  // Element 0: p0 = 0.5, g1 = 0.2, g2 = −0.4. Step 1: m̂ = g, v̂ = g², update = lr·sign(g).
  //   p1 = 0.5·0.99 − 0.1 = 0.395. Step 2: m = 0.9·0.02 + 0.1·(−0.4) = −0.022, m̂ = −0.022/0.19;
  //   v = 0.99·0.0004 + 0.01·0.16 = 0.001996, v̂ = 0.001996/0.0199; p2 = 0.395·0.99 − 0.1·m̂/(√v̂ + eps).
  // Element 1 (no weight decay): p0 = −1.5, g1 = 3, g2 = 1.
  OptimizerOptions o{OptimizerKind::adamw, 0.9, 0.99, 1e-8, 0.1, 0};
  std::vector<model::Parameter> params = {make_parameter("w", {0.5}, {0.2}, true),
                                          make_parameter("bias", {-1.5}, {3.0}, false)};
  Optimizer opt(o, params);
  opt.step(params, 0.1, 0);
  EXPECT_NEAR(params[0].value.item(0), 0.395, 1e-7);
  EXPECT_NEAR(params[1].value.item(0), -1.6, 1e-7);
  set_grad(params[0], {-0.4});
  set_grad(params[1], {1.0});
  opt.step(params, 0.1, 0);
  double m_hat = -0.022 / 0.19, v_hat = 0.001996 / 0.0199;
  double expected0 = 0.395 * 0.99 - 0.1 * m_hat / (std::sqrt(v_hat) + 1e-8);
  double m1 = 0.9 * 0.3 + 0.1 * 1.0, v1 = 0.99 * 0.09 + 0.01 * 1.0;
  double expected1 = -1.6 - 0.1 * (m1 / 0.19) / (std::sqrt(v1 / 0.0199) + 1e-8);
  EXPECT_NEAR(params[0].value.item(0), expected0, 2e-7);
  EXPECT_NEAR(params[1].value.item(0), expected1, 2e-7);
  EXPECT_NEAR(expected0, 0.42761077, 1e-8);  // the hand-computed number itself
  EXPECT_EQ(opt.steps(), 2);
}

TEST(AdamW, RandomTensorsAgainstDoubleReference) {
  Rng rng(7);
  const size_t n = 40000;  // several threads' worth of elements
  OptimizerOptions o{OptimizerKind::adamw, 0.9, 0.95, 1e-8, 0.05, 0};
  std::vector<double> p = random_values(rng, n), m(n, 0), v(n, 0);
  std::vector<model::Parameter> params = {make_parameter("w", p, random_values(rng, n), true)};
  Optimizer opt(o, params);
  for (int t = 1; t <= 3; ++t) {
    std::vector<double> g = params[0].grad.to_double_vector();
    double lr = 0.01 * t;
    for (size_t i = 0; i < n; ++i) {
      p[i] *= 1 - lr * o.weight_decay;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      double m_hat = m[i] / (1 - std::pow(o.beta1, t)), v_hat = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + o.eps);
    }
    opt.step(params, lr, 0);
    set_grad(params[0], random_values(rng, n));
  }
  Tensor expected = Tensor::from_vector(p, {int64_t(n)}, DType::f64);
  EXPECT_LT(relative_error(params[0].value, expected), 1e-6);
}

TEST(AdamW, WeightDecayOnlyWhereAllowed) {
  OptimizerOptions o{OptimizerKind::adamw, 0.9, 0.95, 1e-8, 0.5, 0};
  std::vector<model::Parameter> params = {make_parameter("decayed", {2.0, -3.0}, {0, 0}, true),
                                          make_parameter("A_log", {2.0, -3.0}, {0, 0}, false)};
  Optimizer opt(o, params);
  opt.step(params, 0.2, 0);  // zero gradient: only the decay moves the weights
  EXPECT_FLOAT_EQ(params[0].value.item(0), 2.0f * 0.9f);
  EXPECT_FLOAT_EQ(params[0].value.item(1), -3.0f * 0.9f);
  EXPECT_EQ(params[1].value.item(0), 2.0);
  EXPECT_EQ(params[1].value.item(1), -3.0);
}

TEST(AdamW, RewritesTheComputeCopy) {
  Rng rng(9);
  std::vector<model::Parameter> params = {
      make_parameter("w", random_values(rng, 1001), random_values(rng, 1001), true)};
  params[0].compute = Tensor::zeros({1001}, DType::bf16);
  Optimizer opt({}, params);
  opt.step(params, 0.01, 1.0);
  EXPECT_EQ(params[0].compute.to_double_vector(), params[0].value.to(DType::bf16).to_double_vector());
}

TEST(Sgd, PlainAndMomentum) {
  std::vector<model::Parameter> plain = {make_parameter("w", {1.0, -2.0}, {0.5, 0.25}, false)};
  Optimizer sgd({OptimizerKind::sgd, 0.9, 0.95, 1e-8, 0.0, 0.0}, plain);
  sgd.step(plain, 0.1, 0);
  EXPECT_FLOAT_EQ(plain[0].value.item(0), 0.95f);
  EXPECT_FLOAT_EQ(plain[0].value.item(1), -2.025f);
  EXPECT_EQ(sgd.state_dict().size(), 1u);  // only the step: no buffers without momentum

  std::vector<model::Parameter> moving = {make_parameter("w", {1.0}, {0.5}, true)};
  Optimizer momentum({OptimizerKind::sgd, 0.9, 0.95, 1e-8, 0.1, 0.9}, moving);
  momentum.step(moving, 0.1, 0);  // g = 0.5 + 0.1·1 = 0.6; b = 0.6; p = 1 − 0.06
  EXPECT_FLOAT_EQ(moving[0].value.item(0), 0.94f);
  momentum.step(moving, 0.1, 0);  // g = 0.5 + 0.094 = 0.594; b = 0.54 + 0.594 = 1.134; p = 0.94 − 0.1134
  EXPECT_NEAR(moving[0].value.item(0), 0.8266, 1e-6);
}

TEST(Optimizer, StateRoundTripContinuesBitIdentically) {
  Rng rng(3);
  OptimizerOptions o{OptimizerKind::adamw, 0.8, 0.9, 1e-6, 0.1, 0};
  auto fresh = [&](uint64_t seed) {
    Rng r(seed);
    return std::vector<model::Parameter>{make_parameter("a", random_values(r, 300), random_values(r, 300), true),
                                         make_parameter("b", random_values(r, 7), random_values(r, 7), false)};
  };
  std::vector<model::Parameter> run = fresh(11);
  Optimizer first(o, run);
  first.step(run, 0.01, 0);
  first.step(run, 0.01, 0);
  io::TensorMap saved;
  for (auto& [name, t] : first.state_dict()) saved[name] = t.clone();
  ASSERT_EQ(saved.count("exp_avg.a") + saved.count("exp_avg_sq.b") + saved.count("step"), 3u);

  std::vector<model::Parameter> resumed = fresh(99);  // different values, then overwritten
  for (size_t i = 0; i < run.size(); ++i) {
    resumed[i].value.copy_from(run[i].value);
    resumed[i].grad.copy_from(run[i].grad);
  }
  Optimizer second(o, resumed);
  second.load_state_dict(saved, "test");
  EXPECT_EQ(second.steps(), 2);
  first.step(run, 0.02, 0);
  second.step(resumed, 0.02, 0);
  for (size_t i = 0; i < run.size(); ++i)
    EXPECT_EQ(run[i].value.to_double_vector(), resumed[i].value.to_double_vector()) << run[i].name;
}

TEST(Optimizer, RejectsBadStateAndWeights) {
  std::vector<model::Parameter> params = {make_parameter("w", {1.0, 2.0}, {0.1, 0.1}, true)};
  Optimizer opt({}, params);
  io::TensorMap state = opt.state_dict();
  state.erase("exp_avg_sq.w");
  EXPECT_THROW(opt.load_state_dict(state, "f"), Error);
  state = opt.state_dict();
  state["exp_avg.w"] = Tensor::zeros({3}, DType::f32);
  try {
    opt.load_state_dict(state, "state.safetensors");
    FAIL() << "a misshapen moment was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exp_avg.w"), std::string::npos) << e.what();
  }
  params[0].value = params[0].value.to(DType::bf16);
  EXPECT_THROW(Optimizer({}, params), Error);
  EXPECT_THROW(Optimizer({OptimizerKind::adamw, 1.0, 0.9, 1e-8, 0, 0}, {}), Error);
}

// Plain SGD (lr 1, from zero weights) makes the clipped gradient visible: p = −g·scale.
TEST(ClipGradNorm, GlobalNormInDoubleAndScaling) {
  Rng rng(5);
  std::vector<double> a = random_values(rng, 50000), b = random_values(rng, 13);
  auto zero_weights = [&] {
    return std::vector<model::Parameter>{make_parameter("a", std::vector<double>(a.size()), a, true),
                                         make_parameter("b", std::vector<double>(b.size()), b, true)};
  };
  double expected = 0;
  for (double x : a) expected += double(float(x)) * double(float(x));
  for (double x : b) expected += double(float(x)) * double(float(x));
  expected = std::sqrt(expected);
  const OptimizerOptions sgd{OptimizerKind::sgd, 0.9, 0.95, 1e-8, 0.0, 0.0};
  for (double max_norm : {0.0, 2 * expected, 1.5}) {  // off, under the limit, clipped
    std::vector<model::Parameter> params = zero_weights();
    Optimizer opt(sgd, params);
    EXPECT_NEAR(opt.step(params, 1.0, max_norm), expected, 1e-9 * expected);
    const double scale = max_norm == 1.5 ? 1.5 / (expected + 1e-6) : 1.0;
    EXPECT_FLOAT_EQ(params[1].value.item(3), -float(b[3]) * float(scale)) << max_norm;
    EXPECT_FLOAT_EQ(params[1].grad.item(3), float(b[3])) << "the gradient itself is left as it was";
  }
}

TEST(ClipGradNorm, NormThatIsNotFiniteChangesNothing) {
  std::vector<model::Parameter> params = {make_parameter("w", {1.0, 2.0}, {0.5, NAN}, true),
                                          make_parameter("b", {3.0}, {0.25}, false)};
  Optimizer opt({}, params);
  EXPECT_TRUE(std::isnan(opt.step(params, 0.1, 1.0)));
  EXPECT_EQ(params[0].value.to_double_vector(), (std::vector<double>{1.0, 2.0}));
  EXPECT_EQ(params[1].value.item(0), 3.0);
  EXPECT_EQ(opt.steps(), 0);
  for (auto& [name, t] : opt.state_dict())
    if (name != "step") {
      EXPECT_EQ(t.to_double_vector(), std::vector<double>(size_t(t.numel()), 0.0)) << name;
    }
}

TEST(ClipGradNorm, SameResultAtAnyThreadCountWithinRounding) {
  Rng rng(8);
  std::vector<double> a = random_values(rng, 100000);
  std::vector<model::Parameter> params = {make_parameter("a", a, a, true)};
  Optimizer opt({}, params);
  int saved = num_threads();
  set_num_threads(1);
  double one = opt.step(params, 0.0, 0);
  set_num_threads(2);
  double two = opt.step(params, 0.0, 0);
  set_num_threads(saved);
  EXPECT_NEAR(one, two, 1e-12 * one);
}

TEST(ScaleGradients, AveragesAccumulatedMicroBatches) {
  std::vector<model::Parameter> params = {make_parameter("w", {1.0}, {3.0}, true)};
  scale_gradients(params, 1.0 / 3.0);
  EXPECT_FLOAT_EQ(params[0].grad.item(0), 1.0f);
}

TEST(LrSchedule, WarmupThenCosineToFloor) {
  LrSchedule s{ScheduleKind::cosine, 1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(5), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-4 + 0.5 * 9e-4, 1e-15);  // halfway through the decay
  EXPECT_NEAR(s.at(35), 1e-4 + 0.5 * 9e-4 * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
  EXPECT_NEAR(s.at(500), 1e-4, 1e-15);  // past the end: stays at the floor
  LrSchedule constant{ScheduleKind::constant, 2e-3, 0, 4, 100};
  EXPECT_DOUBLE_EQ(constant.at(2), 1e-3);
  EXPECT_DOUBLE_EQ(constant.at(4), 2e-3);
  EXPECT_DOUBLE_EQ(constant.at(99), 2e-3);
  EXPECT_THROW(schedule_kind_from_name("linear", "--schedule"), Error);
  EXPECT_THROW(optimizer_kind_from_name("adam", "--optimizer"), Error);
}

}  // namespace
}  // namespace mamba::train

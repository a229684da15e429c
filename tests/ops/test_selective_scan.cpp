#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "ops/cpu/scan_simd.h"
#include "ops/elementwise.h"
#include "ops/selective_scan.h"

namespace mamba::ops {
namespace {

// [batch, X, Y] → [batch, Y, X], keeping the dtype.
Tensor swap_last_two(const Tensor& t) {
  const int64_t batch = t.size(0), rows = t.size(1), cols = t.size(2);
  std::vector<double> v = t.to_double_vector(), w(v.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) w[size_t((b * cols + c) * rows + r)] = v[size_t((b * rows + r) * cols + c)];
  return Tensor::from_vector(w, {batch, cols, rows}, t.dtype());
}

// Positions [t0, t1) of a [batch, L, X] tensor, as a new tensor.
Tensor positions(const Tensor& t, int64_t t0, int64_t t1) {
  const int64_t batch = t.size(0), length = t.size(1), row = t.size(2);
  Tensor part = Tensor::empty({batch, t1 - t0, row}, t.dtype());
  const size_t bytes = size_t(row) * dtype_size(t.dtype());
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(static_cast<char*>(part.raw()) + size_t(b * (t1 - t0)) * bytes,
                static_cast<const char*>(t.raw()) + size_t(b * length + t0) * bytes, size_t(t1 - t0) * bytes);
  return part;
}

// Position t of a [batch, L, X] tensor as [batch, X].
Tensor position(const Tensor& t, int64_t i) { return positions(t, i, i + 1).view({t.size(0), t.size(2)}); }

// The decode-step inputs of position t of a whole-sequence input (delta included).
ScanInputs step_at(const ScanInputs& in, int64_t t) {
  ScanInputs step = in;
  step.u = position(in.u, t);
  step.delta = position(in.delta, t);
  step.B = position(in.B, t);
  step.C = position(in.C, t);
  step.z = position(in.z, t);
  return step;
}

void expect_close(const Tensor& fast, const Tensor& ref, double tolerance, const std::string& what) {
  ASSERT_EQ(fast.defined(), ref.defined()) << what;
  if (!ref.defined()) return;
  ASSERT_EQ(fast.shape(), ref.shape()) << what;
  const double error = relative_error(fast, ref);
  if (std::getenv("SCAN_PRINT")) std::printf("%-70s %.3g\n", what.c_str(), error);
  EXPECT_LT(error, tolerance) << what;  // NaN fails too
}

void expect_grads_close(const ScanGrads& fast, const ScanGrads& ref, double tolerance, const std::string& what) {
  expect_close(fast.du, ref.du, tolerance, what + " du");
  expect_close(fast.ddelta, ref.ddelta, tolerance, what + " ddelta");
  expect_close(fast.dA, ref.dA, tolerance, what + " dA");
  expect_close(fast.dB, ref.dB, tolerance, what + " dB");
  expect_close(fast.dC, ref.dC, tolerance, what + " dC");
  expect_close(fast.dD, ref.dD, tolerance, what + " dD");
  expect_close(fast.dz, ref.dz, tolerance, what + " dz");
  expect_close(fast.ddelta_bias, ref.ddelta_bias, tolerance, what + " ddelta_bias");
  expect_close(fast.dinitial_state, ref.dinitial_state, tolerance, what + " dinitial_state");
}

struct Config {
  int64_t batch, length, dim, n_states;
  bool z, D, delta_bias, softplus, initial_state, lengths;
  std::string name() const {
    return detail::concat("batch ", batch, " L ", length, " D ", dim, " N ", n_states, z ? " z" : "", D ? " D" : "",
                          delta_bias ? " bias" : "", softplus ? " softplus" : "", initial_state ? " h0" : "",
                          lengths ? " lengths" : "");
  }
};

Tensor random_tensor(Rng& rng, const Shape& shape, DType dtype, double lo, double hi) {
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = rng.uniform(lo, hi);
  return Tensor::from_vector(v, shape, dtype);
}

Tensor normal_tensor(Rng& rng, const Shape& shape, DType dtype, double scale) {
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = scale * rng.normal();
  return Tensor::from_vector(v, shape, dtype);
}

// Activations in `dtype` (bf16 values are rounded once, so ref and fast kernels see the same
// numbers); parameters in `param_dtype`. Without softplus δ + bias stays positive.
ScanInputs random_inputs(const Config& c, DType dtype, uint64_t seed, DType param_dtype = DType::f32) {
  Rng rng(seed);
  const Shape tokens{c.batch, c.length, c.dim}, rows{c.batch, c.length, c.n_states};
  ScanInputs in;
  in.u = normal_tensor(rng, tokens, dtype, 1.0);
  in.delta = c.softplus ? normal_tensor(rng, tokens, dtype, 1.0) : random_tensor(rng, tokens, dtype, 0.01, 0.6);
  std::vector<double> A(size_t(c.dim * c.n_states));
  for (double& a : A) a = -std::exp(rng.uniform(-1.0, 2.5));
  in.A = Tensor::from_vector(A, {c.dim, c.n_states}, param_dtype);
  in.B = normal_tensor(rng, rows, dtype, 1.0);
  in.C = normal_tensor(rng, rows, dtype, 1.0);
  if (c.D) in.D = normal_tensor(rng, {c.dim}, param_dtype, 1.0);
  if (c.z) in.z = normal_tensor(rng, tokens, dtype, 1.5);
  if (c.delta_bias)
    in.delta_bias =
        c.softplus ? normal_tensor(rng, {c.dim}, param_dtype, 0.5) : random_tensor(rng, {c.dim}, param_dtype, 0.0, 0.2);
  in.delta_softplus = c.softplus;
  if (c.initial_state) in.initial_state = normal_tensor(rng, {c.batch, c.dim, c.n_states}, param_dtype, 1.0);
  if (c.lengths) {
    std::vector<double> lengths(size_t(c.batch));
    for (int64_t b = 0; b < c.batch; ++b)
      lengths[size_t(b)] = b == 0 ? double(c.length) : double(rng.below(uint64_t(c.length) + 1));
    if (c.batch > 1) lengths[1] = double(c.length / 2);  // one sequence always ends early
    in.lengths = Tensor::from_vector(lengths, {c.batch}, DType::i32);
  }
  return in;
}

std::string fixture_dir() { return MAMBACPP_FIXTURES; }

// (a) The reference against the float64 fixtures of transformers' sequential loop.
TEST(SelectiveScanRef, MatchesFixtures) {
  if (!std::filesystem::exists(fixture_dir() + "/selective_scan_case0.safetensors"))
    GTEST_SKIP() << "fixtures not found at " << fixture_dir();
  const auto cases = nlohmann::json::parse(std::ifstream(fixture_dir() + "/selective_scan_cases.json"))["cases"];
  int checked = 0;
  for (const auto& meta : cases) {
    const std::string file = meta["file"];
    SCOPED_TRACE(file);
    auto f = io::read_safetensors(fixture_dir() + "/" + file).tensors;
    ScanInputs in;
    in.u = swap_last_two(f["u"]);
    in.delta = swap_last_two(f["delta"]);
    in.A = f["A"];
    in.B = swap_last_two(f["B"]);
    in.C = swap_last_two(f["C"]);
    if (f.count("D")) in.D = f["D"];
    if (f.count("z")) in.z = swap_last_two(f["z"]);
    if (f.count("delta_bias")) in.delta_bias = f["delta_bias"];
    in.delta_softplus = meta["delta_softplus"].get<bool>();
    const Tensor dout = swap_last_two(f["dout"]);

    const ScanOutputs out = ref::selective_scan_forward(in);
    expect_close(out.out, swap_last_two(f["out"]), 1e-10, "out");
    expect_close(out.last_state, f["last_state"], 1e-10, "last_state");
    const ScanGrads g = ref::selective_scan_backward(in, dout);
    // Fixture gradients in our layouts; absent inputs stay undefined, like their gradients.
    auto fixture_grad = [&](const char* name, bool transposed) {
      if (!f.count(name)) return Tensor();
      return transposed ? swap_last_two(f[name]) : f[name];
    };
    ScanGrads want;
    want.du = fixture_grad("grad_u", true);
    want.ddelta = fixture_grad("grad_delta", true);
    want.dA = fixture_grad("grad_A", false);
    want.dB = fixture_grad("grad_B", true);
    want.dC = fixture_grad("grad_C", true);
    want.dD = fixture_grad("grad_D", false);
    want.dz = fixture_grad("grad_z", true);
    want.ddelta_bias = fixture_grad("grad_delta_bias", false);
    expect_grads_close(g, want, 1e-10, "ref vs fixture");

    // The fast CPU kernels on the same f32 inputs.
    ScanOutputs fast = cpu::selective_scan_forward(in);
    EXPECT_LT(relative_error(fast.out, out.out), 1e-5);
    EXPECT_LT(relative_error(fast.last_state, out.last_state), 1e-5);
    expect_grads_close(cpu::selective_scan_backward(in, dout, {}), g, 1e-5, "cpu vs fixture");
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

// Σ out·dout + Σ last_state·dlast_state, by the reference.
double loss(const ScanInputs& in, const Tensor& dout, const Tensor& dlast) {
  ScanOutputs o = ref::selective_scan_forward(in);
  double sum = 0;
  for (int64_t i = 0; i < o.out.numel(); ++i) sum += o.out.item(i) * dout.item(i);
  for (int64_t i = 0; i < o.last_state.numel(); ++i) sum += o.last_state.item(i) * dlast.item(i);
  return sum;
}

// (b) The analytic reference backward against central differences, every input perturbed.
TEST(SelectiveScanRef, BackwardMatchesFiniteDifferences) {
  for (bool softplus : {true, false}) {
    const Config c{2, 6, 3, 2, true, true, true, softplus, true, true};
    SCOPED_TRACE(c.name());
    ScanInputs in = random_inputs(c, DType::f64, 11, DType::f64);
    Rng rng(12);
    const Tensor dout = normal_tensor(rng, in.u.shape(), DType::f64, 1.0);
    const Tensor dlast = normal_tensor(rng, in.initial_state.shape(), DType::f64, 1.0);
    const ScanGrads g = ref::selective_scan_backward(in, dout, dlast);
    const std::pair<Tensor*, const Tensor*> pairs[] = {{&in.u, &g.du},
                                                       {&in.delta, &g.ddelta},
                                                       {&in.A, &g.dA},
                                                       {&in.B, &g.dB},
                                                       {&in.C, &g.dC},
                                                       {&in.D, &g.dD},
                                                       {&in.z, &g.dz},
                                                       {&in.delta_bias, &g.ddelta_bias},
                                                       {&in.initial_state, &g.dinitial_state}};
    for (const auto& [input, grad] : pairs) {
      ASSERT_TRUE(grad->defined());
      std::vector<double> numeric(size_t(input->numel()));
      double* x = input->data<double>();
      for (int64_t i = 0; i < input->numel(); ++i) {
        const double saved = x[i], eps = 1e-5;
        x[i] = saved + eps;
        const double up = loss(in, dout, dlast);
        x[i] = saved - eps;
        const double down = loss(in, dout, dlast);
        x[i] = saved;
        numeric[size_t(i)] = (up - down) / (2 * eps);
      }
      const double error = relative_error(*grad, Tensor::from_vector(numeric, input->shape(), DType::f64));
      if (std::getenv("SCAN_PRINT")) std::printf("finite differences %.3g\n", error);
      EXPECT_LT(error, 1e-7) << "gradient of input with shape " << shape_string(input->shape());
    }
  }
}

const Config kRandomConfigs[] = {
    {2, 1, 37, 16, true, true, true, true, true, true},     {3, 7, 37, 1, false, true, false, false, false, true},
    {2, 129, 37, 16, true, false, true, true, true, false}, {3, 129, 37, 1, false, false, false, true, true, true},
    {2, 7, 16, 16, true, true, true, false, false, false},  {2, 40, 37, 32, true, true, true, true, true, true},
    {1, 4097, 5, 16, true, true, true, true, true, false},  {2, 4097, 3, 1, false, true, false, false, false, true},
    {3, 300, 19, 16, true, true, false, true, false, true},
};

// (c) Fast CPU kernels against the reference, forward and every gradient, f32 and bf16.
TEST(SelectiveScanCpu, MatchesReferenceOnRandomInputs) {
  uint64_t seed = 100;
  for (const Config& c : kRandomConfigs) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const std::string what = c.name() + " " + dtype_name(dtype);
      SCOPED_TRACE(what);
      const double tolerance = dtype == DType::f32 ? 1e-5 : 1e-2;
      const ScanInputs in = random_inputs(c, dtype, ++seed);
      Rng rng(++seed);
      const Tensor dout = normal_tensor(rng, in.u.shape(), dtype, 1.0);
      const Tensor dlast = normal_tensor(rng, {c.batch, c.dim, c.n_states}, DType::f32, 1.0);

      const ScanOutputs fast = selective_scan_forward(in), ref = ref::selective_scan_forward(in);
      EXPECT_EQ(fast.out.dtype(), dtype);
      expect_close(fast.out, ref.out, tolerance, what + " out");
      expect_close(fast.last_state, ref.last_state, tolerance, what + " last_state");
      const ScanGrads fast_grads = selective_scan_backward(in, dout, dlast);
      EXPECT_EQ(fast_grads.du.dtype(), dtype);
      expect_grads_close(fast_grads, ref::selective_scan_backward(in, dout, dlast), tolerance, what);
    }
  }
}

TEST(SelectiveScanCpu, BackwardWithoutLastStateGradient) {
  const Config c{2, 150, 21, 16, true, true, true, true, true, true};
  const ScanInputs in = random_inputs(c, DType::f32, 7);
  Rng rng(8);
  const Tensor dout = normal_tensor(rng, in.u.shape(), DType::f32, 1.0);
  expect_grads_close(selective_scan_backward(in, dout), ref::selective_scan_backward(in, dout), 1e-5, c.name());
}

TEST(SelectiveScanCpu, BackwardIsDeterministic) {
  const Config c{2, 200, 40, 16, true, true, true, true, true, false};
  const ScanInputs in = random_inputs(c, DType::f32, 9);
  Rng rng(10);
  const Tensor dout = normal_tensor(rng, in.u.shape(), DType::f32, 1.0);
  const ScanGrads first = selective_scan_backward(in, dout), second = selective_scan_backward(in, dout);
  for (auto field : {&ScanGrads::dA, &ScanGrads::dB, &ScanGrads::dC, &ScanGrads::dD, &ScanGrads::ddelta_bias})
    EXPECT_EQ(std::memcmp((first.*field).raw(), (second.*field).raw(), (first.*field).nbytes()), 0);
}

// (d) A prefill split in two, carrying the state, equals one pass; so does a loop of decode steps.
TEST(SelectiveScanCpu, ChunkedForwardAndStepLoopMatchOnePass) {
  const Config c{2, 300, 37, 16, true, true, true, true, true, false};
  const ScanInputs in = random_inputs(c, DType::f32, 21);
  const ScanOutputs whole = selective_scan_forward(in);
  const int64_t split = 131;
  auto part = [&](int64_t t0, int64_t t1, const Tensor& state) {
    ScanInputs p = in;
    p.u = positions(in.u, t0, t1);
    p.delta = positions(in.delta, t0, t1);
    p.B = positions(in.B, t0, t1);
    p.C = positions(in.C, t0, t1);
    p.z = positions(in.z, t0, t1);
    p.initial_state = state;
    return selective_scan_forward(p);
  };
  const ScanOutputs first = part(0, split, in.initial_state);
  const ScanOutputs second = part(split, c.length, first.last_state);
  EXPECT_LT(relative_error(first.out, positions(whole.out, 0, split)), 1e-6);
  EXPECT_LT(relative_error(second.out, positions(whole.out, split, c.length)), 1e-6);
  EXPECT_LT(relative_error(second.last_state, whole.last_state), 1e-6);

  Tensor state = in.initial_state.clone();
  std::vector<double> stepped(size_t(whole.out.numel()));
  for (int64_t t = 0; t < c.length; ++t) {
    ScanInputs step = step_at(in, t);
    const std::vector<double> y = selective_state_update(step, state).to_double_vector();
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t d = 0; d < c.dim; ++d) stepped[size_t((b * c.length + t) * c.dim + d)] = y[size_t(b * c.dim + d)];
  }
  EXPECT_LT(relative_error(Tensor::from_vector(stepped, whole.out.shape(), DType::f64), whole.out), 1e-6);
  EXPECT_LT(relative_error(state, whole.last_state), 1e-6);
}

// dt_proj folded into the step: `delta` is the low-rank input [batch, R] and delta_proj the weight
// [D, R], in every weight storage dtype. D = 37 leaves a partial block of 16 channels, R = 20 a
// partial group of 16 ranks; D = 325 gives the threads chunks of several blocks, the last one partial.
TEST(SelectiveScanCpu, StepWithDeltaProjMatchesReference) {
  for (int64_t dim : {37, 325})
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Config c{3, 1, dim, 16, true, true, true, true, true, false};
      for (DType weight_dtype : {DType::f32, DType::bf16, DType::f16}) {
        for (int64_t rank : {20, 48}) {
          SCOPED_TRACE(
              detail::concat("D ", dim, " ", dtype_name(dtype), " weight ", dtype_name(weight_dtype), " R ", rank));
          const ScanInputs in = random_inputs(c, dtype, 41);
          Rng rng(43);
          ScanInputs step = step_at(in, 0);
          step.delta = normal_tensor(rng, {c.batch, rank}, dtype, 1.0);
          step.delta_proj = normal_tensor(rng, {c.dim, rank}, weight_dtype, 1.0 / std::sqrt(double(rank)));
          Tensor state = in.initial_state.clone(), ref_state = in.initial_state.to(DType::f64);
          const Tensor out = selective_state_update(step, state);
          const Tensor ref_out = ref::selective_state_update(step, ref_state);
          EXPECT_LT(relative_error(out, ref_out), dtype == DType::f32 ? 1e-5 : 1e-2);
          EXPECT_LT(relative_error(state, ref_state), 1e-5);
        }
      }
    }
}

// The reference's folded projection is the same as a step on δ = delta · delta_projᵀ formed here.
TEST(SelectiveScanRef, StepWithDeltaProjIsAStepOnTheProjectedDelta) {
  const Config c{2, 1, 9, 4, true, true, true, true, true, false};
  const int64_t rank = 5;
  const ScanInputs in = random_inputs(c, DType::f64, 47, DType::f64);
  Rng rng(53);
  ScanInputs folded = step_at(in, 0);
  folded.delta = normal_tensor(rng, {c.batch, rank}, DType::f64, 1.0);
  folded.delta_proj = normal_tensor(rng, {c.dim, rank}, DType::f64, 0.5);
  const std::vector<double> low = folded.delta.to_double_vector(), weight = folded.delta_proj.to_double_vector();
  std::vector<double> delta(size_t(c.batch * c.dim), 0.0);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t d = 0; d < c.dim; ++d)
      for (int64_t r = 0; r < rank; ++r)
        delta[size_t(b * c.dim + d)] += low[size_t(b * rank + r)] * weight[size_t(d * rank + r)];
  ScanInputs explicit_delta = folded;
  explicit_delta.delta_proj = Tensor();
  explicit_delta.delta = Tensor::from_vector(delta, {c.batch, c.dim}, DType::f64);
  Tensor folded_state = in.initial_state.clone(), explicit_state = in.initial_state.clone();
  const Tensor folded_out = ref::selective_state_update(folded, folded_state);
  const Tensor explicit_out = ref::selective_state_update(explicit_delta, explicit_state);
  EXPECT_LT(relative_error(folded_out, explicit_out), 1e-14);
  EXPECT_LT(relative_error(folded_state, explicit_state), 1e-14);
}

TEST(SelectiveScanCpu, StepMatchesReferenceStep) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t n_states : {16, 5, 40}) {
      const Config c{3, 1, 37, n_states, true, true, true, true, true, false};
      SCOPED_TRACE(c.name() + dtype_name(dtype));
      const ScanInputs in = random_inputs(c, dtype, 31 + uint64_t(n_states));
      ScanInputs step = step_at(in, 0);
      Tensor state = in.initial_state.clone(), ref_state = in.initial_state.to(DType::f64);
      const Tensor out = selective_state_update(step, state);
      const Tensor ref_out = ref::selective_state_update(step, ref_state);
      const double tolerance = dtype == DType::f32 ? 1e-5 : 1e-2;
      EXPECT_LT(relative_error(out, ref_out), tolerance);
      EXPECT_LT(relative_error(state, ref_state), 1e-5);
    }
  }
}

// The first `count` channels of t, whose channel axis is `axis` (a copy).
Tensor first_channels(const Tensor& t, int axis, int64_t count) {
  if (!t.defined()) return t;
  Shape shape = t.shape();
  const int64_t outer = shape_numel(Shape(shape.begin(), shape.begin() + axis)), dim = shape[size_t(axis)];
  const int64_t inner = shape_numel(Shape(shape.begin() + axis + 1, shape.end()));
  const std::vector<double> all = t.to_double_vector();
  std::vector<double> kept;
  for (int64_t o = 0; o < outer; ++o)
    kept.insert(kept.end(), all.begin() + (o * dim) * inner, all.begin() + (o * dim + count) * inner);
  shape[size_t(axis)] = count;
  return Tensor::from_vector(kept, shape, t.dtype());
}

// With N = 16, whole blocks of 16 channels take an unrolled path; a block of fewer channels takes
// the general loop. Channels are independent, so 16 channels and their first 15 alone (each path
// once) must agree bitwise on those 15.
TEST(SelectiveScanCpu, StepFullBlockEqualsTheGeneralLoop) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Config c{2, 1, 16, 16, true, true, true, true, true, false};
    const ScanInputs full = step_at(random_inputs(c, dtype, 71), 0);
    ScanInputs part = full;
    for (Tensor* t : {&part.u, &part.delta, &part.z}) *t = first_channels(*t, 1, 15);
    for (Tensor* t : {&part.A, &part.D, &part.delta_bias}) *t = first_channels(*t, 0, 15);
    Tensor full_state = full.initial_state.clone(), part_state = first_channels(full.initial_state, 1, 15);
    const Tensor full_out = selective_state_update(full, full_state);
    const Tensor part_out = selective_state_update(part, part_state);
    EXPECT_EQ(first_channels(full_out, 1, 15).to_double_vector(), part_out.to_double_vector());
    EXPECT_EQ(first_channels(full_state, 1, 15).to_double_vector(), part_state.to_double_vector());
  }
}

TEST(SelectiveScanSimd, ExpIsWithinTwoUlp) {
  double worst_exp = 0, worst_exp2 = 0, worst_softplus = 0;
  auto ulps = [](float got, double want) {
    const float rounded = float(want);
    return std::abs(double(got) - want) / double(std::nextafter(rounded, INFINITY) - rounded);
  };
  Rng rng(5);
  for (int i = 0; i < 20000; ++i) {
    const float x = float(rng.uniform(-87.0, 88.0)), x2 = float(rng.uniform(-125.0, 127.0));
    worst_exp = std::max(worst_exp, ulps(cpu::simd::exp(cpu::simd::broadcast(x))[3], std::exp(double(x))));
    worst_exp2 = std::max(worst_exp2, ulps(cpu::simd::exp2(cpu::simd::broadcast(x2))[7], std::exp2(double(x2))));
    const float s = float(rng.uniform(-30.0, 30.0));
    const double softplus = s > 20 ? s : std::log1p(std::exp(double(s)));
    worst_softplus =
        std::max(worst_softplus, std::abs(cpu::simd::softplus(cpu::simd::broadcast(s))[0] - softplus) / softplus);
  }
  EXPECT_LE(worst_exp, 2.0);
  EXPECT_LE(worst_exp2, 2.0);
  EXPECT_LT(worst_softplus, 5e-7);
  EXPECT_EQ(cpu::simd::exp(cpu::simd::broadcast(-INFINITY))[0], 0.0f);
  EXPECT_EQ(cpu::simd::exp2(cpu::simd::broadcast(-1000.0f))[0], 0.0f) << "fast path underflows to 0";
}

TEST(SelectiveScanSimd, TransposeSumPutsEachVectorsSumInItsLane) {
  cpu::simd::Vec16 v[cpu::simd::kLanes];
  Rng rng(3);
  std::vector<double> expected(cpu::simd::kLanes, 0.0);
  for (int n = 0; n < cpu::simd::kLanes; ++n)
    for (int lane = 0; lane < cpu::simd::kLanes; ++lane) {
      v[n][lane] = float(int(rng.below(100)));  // integers: every summation order is exact
      expected[size_t(n)] += v[n][lane];
    }
  const cpu::simd::Vec16 sums = cpu::simd::transpose_sum(v);
  for (int n = 0; n < cpu::simd::kLanes; ++n) EXPECT_EQ(sums[n], float(expected[size_t(n)])) << "lane " << n;
}

void expect_error_mentions(const std::function<void()>& call, const std::string& text) {
  try {
    call();
    ADD_FAILURE() << "expected an error mentioning '" << text << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(SelectiveScanChecks, BadInputsNameTheTensor) {
  const Config c{2, 5, 7, 4, true, true, true, true, true, true};
  const ScanInputs good = random_inputs(c, DType::f32, 1);
  ScanInputs in = good;
  in.B = Tensor::zeros({2, 5, 3}, DType::f32);
  expect_error_mentions([&] { selective_scan_forward(in); }, "B");
  in = good;
  in.delta = Tensor::zeros({2, 5, 7}, DType::bf16);
  expect_error_mentions([&] { selective_scan_forward(in); }, "delta");
  in = good;
  in.lengths = Tensor::from_vector({5, 6}, {2}, DType::i32);
  expect_error_mentions([&] { selective_scan_forward(in); }, "lengths[1] = 6");
  in = good;
  in.lengths = Tensor::from_vector({-1, 2}, {2}, DType::i32);
  expect_error_mentions([&] { cpu::selective_scan_forward(in); }, "lengths[0] = -1");
  in = good;
  in.initial_state = Tensor::zeros({2, 7, 5}, DType::f32);
  expect_error_mentions([&] { ref::selective_scan_forward(in); }, "initial_state");
  in = good;
  in.A = Tensor::zeros({7, 4}, DType::f64);
  expect_error_mentions([&] { cpu::selective_scan_forward(in); }, "A");
  expect_error_mentions([&] { selective_scan_backward(good, Tensor::zeros({2, 5, 6}, DType::f32)); }, "dout");
  expect_error_mentions(
      [&] {
        selective_scan_backward(good, Tensor::zeros({2, 5, 7}, DType::f32), Tensor::zeros({2, 7}, DType::f32));
      },
      "dlast_state");
  in = good;
  in.u = Tensor();
  expect_error_mentions([&] { selective_scan_forward(in); }, "u is missing");
  ScanInputs step = good;
  step.u = position(good.u, 0);
  step.delta = position(good.delta, 0);
  step.B = position(good.B, 0);
  step.C = position(good.C, 0);
  step.z = position(good.z, 0);
  Tensor wrong_state = Tensor::zeros({2, 7, 3}, DType::f32);
  expect_error_mentions([&] { selective_state_update(step, wrong_state); }, "state");
  Tensor state = Tensor::zeros({2, 7, 3}, DType::f32);
  step.delta = Tensor::zeros({2, 4}, DType::f32);
  step.delta_proj = Tensor::zeros({7, 5}, DType::f32);
  expect_error_mentions([&] { selective_state_update(step, state); }, "delta_proj");
  in = good;
  in.delta_proj = Tensor::zeros({7, 4}, DType::f32);
  expect_error_mentions([&] { selective_scan_forward(in); }, "delta_proj");
}

TEST(SelectiveScanChecks, CudaTensorWithoutCudaBuildIsAClearError) {
  if (cuda_compiled()) GTEST_SKIP() << "built with CUDA";
  const Config c{1, 3, 4, 2, false, false, false, false, false, false};
  ScanInputs in = random_inputs(c, DType::f32, 2);
  auto on_cuda = [](const Tensor& t) { return Tensor::wrap(t.raw(), t.shape(), t.dtype(), nullptr, Device::cuda); };
  for (Tensor* t : {&in.u, &in.delta, &in.A, &in.B, &in.C}) *t = on_cuda(*t);
  expect_error_mentions([&] { selective_scan_forward(in); }, "CUDA support");
  expect_error_mentions([&] { selective_scan_backward(in, in.u); }, "CUDA support");
}

// The packed step (δ rows, B and C side by side in one [batch, R + 2N], as x_proj writes them) is the
// step on the pieces, bitwise, on the CPU (batch 3: copied pieces) and in float64 (batch 1: views);
// a missing or misshapen delta_B_C, or pieces given beside it, are clear errors.
TEST(SelectiveScanCpu, PackedStepIsTheStepOnThePieces) {
  for (auto [batch, dtype] : {std::pair<int64_t, DType>{3, DType::bf16}, {1, DType::f64}}) {
    SCOPED_TRACE(detail::concat("batch ", batch, " ", dtype_name(dtype)));
    const Config c{batch, 1, 37, 16, true, true, true, true, true, false};
    const int64_t rank = 20;
    const ScanInputs in = random_inputs(c, dtype, 59, dtype == DType::f64 ? DType::f64 : DType::f32);
    Rng rng(61);
    ScanInputs step = step_at(in, 0);
    step.delta = normal_tensor(rng, {c.batch, rank}, dtype, 1.0);
    step.delta_proj = normal_tensor(rng, {c.dim, rank}, dtype == DType::f64 ? DType::f64 : DType::bf16, 0.2);
    const Tensor delta_B_C = concat_columns({step.delta, step.B, step.C});
    ScanInputs packed = step;
    packed.delta = packed.B = packed.C = Tensor();
    Tensor state = in.initial_state.clone(), packed_state = in.initial_state.clone();
    const Tensor out = selective_state_update(step, state);
    const Tensor packed_out = selective_state_update_packed(packed, delta_B_C, packed_state);
    EXPECT_EQ(packed_out.to_double_vector(), out.to_double_vector());
    EXPECT_EQ(packed_state.to_double_vector(), state.to_double_vector());

    expect_error_mentions([&] { selective_state_update_packed(packed, Tensor(), packed_state); },
                          "delta_B_C must have shape [batch, R + 2N] = [batch, 52], got nothing");
    expect_error_mentions(
        [&] {
          selective_state_update_packed(packed, split_columns(delta_B_C, {51, 1})[0], packed_state);
        },
        "delta_B_C must have shape [batch, R + 2N] = [batch, 52]");
    expect_error_mentions([&] { selective_state_update_packed(step, delta_B_C, packed_state); },
                          "delta, B and C come in delta_B_C, not apart");
  }
}

}  // namespace
}  // namespace mamba::ops

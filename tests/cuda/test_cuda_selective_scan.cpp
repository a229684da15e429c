// GPU selective scan (forward, backward, decode step) against the float64 reference ops::ref, on
// random odd sizes, every output and every gradient. Calls go through the ops:: entry points (they
// dispatch on the device), so this file links in builds without CUDA, where it skips.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>

#include "cuda_test_util.h"
#include "ops/elementwise.h"
#include "ops/selective_scan.h"
#ifdef MAMBACPP_CUDA
#include "ops/cuda/scan_launch.h"
#endif

namespace mamba {
namespace {
using namespace cuda_test;

struct Dims {
  int batch, L, D, N;
};

struct Features {
  bool z = true, D = true, bias = true, softplus = true, initial = true, lengths = true, dlast = true;
};

// Host copies (already rounded to the GPU dtype) of one problem.
struct Problem {
  Dims dims;
  Features f;
  std::vector<double> u, delta, A, B, C, D, z, bias, init, dout, dlast;
  std::vector<int> lengths;
};

Problem make_problem(const Dims& d, const Features& f, DType dtype, uint64_t seed) {
  Rng rng(seed);
  Problem p;
  p.dims = d;
  p.f = f;
  const int64_t rows = int64_t(d.batch) * d.L * d.D, srows = int64_t(d.batch) * d.L * d.N;
  p.u = rounded(random_vector(rng, rows, -1, 1), dtype);
  p.delta = rounded(random_vector(rng, rows, f.softplus ? -3.0 : 0.01, f.softplus ? 0.5 : 0.5), dtype);
  p.A = random_vector(rng, int64_t(d.D) * d.N, -2.0, -0.1);
  p.A = rounded(p.A, DType::f32);
  p.B = rounded(random_vector(rng, srows, -1, 1), dtype);
  p.C = rounded(random_vector(rng, srows, -1, 1), dtype);
  p.dout = rounded(random_vector(rng, rows, -1, 1), dtype);
  if (f.D) p.D = rounded(random_vector(rng, d.D, -1, 1), DType::f32);
  if (f.z) p.z = rounded(random_vector(rng, rows, -2, 2), dtype);
  if (f.bias) p.bias = rounded(random_vector(rng, d.D, -1, 0.5), DType::f32);
  if (f.initial) p.init = rounded(random_vector(rng, int64_t(d.batch) * d.D * d.N, -1, 1), DType::f32);
  if (f.dlast) p.dlast = rounded(random_vector(rng, int64_t(d.batch) * d.D * d.N, -1, 1), DType::f32);
  if (f.lengths)
    for (int b = 0; b < d.batch; ++b) p.lengths.push_back(b == 0 ? d.L : int(rng.below(uint64_t(d.L) + 1)));
  return p;
}

ops::ScanInputs gpu_inputs(const Problem& p, DType dtype) {
  const Dims& d = p.dims;
  ops::ScanInputs in;
  in.u = on_gpu(p.u, {d.batch, d.L, d.D}, dtype);
  in.delta = on_gpu(p.delta, {d.batch, d.L, d.D}, dtype);
  in.A = on_gpu(p.A, {d.D, d.N}, DType::f32);
  in.B = on_gpu(p.B, {d.batch, d.L, d.N}, dtype);
  in.C = on_gpu(p.C, {d.batch, d.L, d.N}, dtype);
  if (p.f.D) in.D = on_gpu(p.D, {d.D}, DType::f32);
  if (p.f.z) in.z = on_gpu(p.z, {d.batch, d.L, d.D}, dtype);
  if (p.f.bias) in.delta_bias = on_gpu(p.bias, {d.D}, DType::f32);
  in.delta_softplus = p.f.softplus;
  if (p.f.initial) in.initial_state = on_gpu(p.init, {d.batch, d.D, d.N}, DType::f32);
  if (p.f.lengths) {
    std::vector<double> lens(p.lengths.begin(), p.lengths.end());
    in.lengths = on_gpu(lens, {d.batch}, DType::i32);
  }
  return in;
}

struct Reference {
  std::vector<double> out, last, du, ddelta, dA, dB, dC, dD, dz, dbias, dinit;
};

// ops::ref (float64 loops, the definition) on the same values the GPU sees.
Reference reference(const Problem& p, bool backward) {
  const Dims& d = p.dims;
  auto f64 = [](const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape, DType::f64); };
  ops::ScanInputs in;
  in.u = f64(p.u, {d.batch, d.L, d.D});
  in.delta = f64(p.delta, {d.batch, d.L, d.D});
  in.A = f64(p.A, {d.D, d.N});
  in.B = f64(p.B, {d.batch, d.L, d.N});
  in.C = f64(p.C, {d.batch, d.L, d.N});
  if (p.f.D) in.D = f64(p.D, {d.D});
  if (p.f.z) in.z = f64(p.z, {d.batch, d.L, d.D});
  if (p.f.bias) in.delta_bias = f64(p.bias, {d.D});
  in.delta_softplus = p.f.softplus;
  if (p.f.initial) in.initial_state = f64(p.init, {d.batch, d.D, d.N});
  if (p.f.lengths) in.lengths = Tensor::from_vector({p.lengths.begin(), p.lengths.end()}, {d.batch}, DType::i32);
  Reference r;
  const ops::ScanOutputs out = ops::ref::selective_scan_forward(in);
  r.out = out.out.to_double_vector();
  r.last = out.last_state.to_double_vector();
  if (!backward) return r;
  const Tensor dlast = p.f.dlast ? f64(p.dlast, {d.batch, d.D, d.N}) : Tensor();
  const ops::ScanGrads g = ops::ref::selective_scan_backward(in, f64(p.dout, {d.batch, d.L, d.D}), dlast);
  auto values = [](const Tensor& t) { return t.defined() ? t.to_double_vector() : std::vector<double>(); };
  r.du = values(g.du), r.ddelta = values(g.ddelta), r.dA = values(g.dA), r.dB = values(g.dB), r.dC = values(g.dC);
  r.dD = values(g.dD), r.dz = values(g.dz), r.dbias = values(g.ddelta_bias), r.dinit = values(g.dinitial_state);
  return r;
}

void check_scan(const Dims& d, const Features& f, DType dtype, bool backward, uint64_t seed) {
  const Problem p = make_problem(d, f, dtype, seed);
  const ops::ScanInputs in = gpu_inputs(p, dtype);
  const Reference r = reference(p, backward);
  const double tol = tolerance(dtype);
  const std::string where = "batch " + std::to_string(d.batch) + " L " + std::to_string(d.L) + " D " +
                            std::to_string(d.D) + " N " + std::to_string(d.N) + " " + dtype_name(dtype);
  // The plain forward (inference) and the training one, which also returns the chunk states.
  ops::ScanInputs training = in;
  training.keep_chunk_states = true;
  const ops::ScanOutputs plain = ops::selective_scan_forward(in), out = ops::selective_scan_forward(training);
  EXPECT_FALSE(plain.chunk_states.defined()) << where;
  ASSERT_TRUE(out.chunk_states.defined()) << where;
  const int64_t stride = ops::scan_state_stride(dtype, d.N);
  EXPECT_EQ(out.chunk_states.shape(), (Shape{d.batch, (d.L + stride - 1) / stride, d.D, d.N}));
  for (const ops::ScanOutputs* o : {&plain, &out}) {
    const char* which = o == &plain ? ", plain forward" : ", forward keeping chunk states";
    ASSERT_EQ(o->out.dtype(), dtype);
    EXPECT_LT(error_vs(o->out, r.out), tol) << "out, " << where << which;
    EXPECT_LT(error_vs(o->last_state, r.last), tol) << "last_state, " << where << which;
  }
  if (!backward) return;
  const Tensor dout = on_gpu(p.dout, {d.batch, d.L, d.D}, dtype);
  const Tensor dlast = f.dlast ? on_gpu(p.dlast, {d.batch, d.D, d.N}, DType::f32) : Tensor();
  // The backward recomputes the chunk states, or takes the forward's.
  for (const bool kept : {false, true}) {
    ops::ScanInputs backward_in = in;
    if (kept) backward_in.chunk_states = out.chunk_states;
    const std::string how = where + (kept ? ", chunk states from the forward" : ", chunk states recomputed");
    const ops::ScanGrads g = ops::selective_scan_backward(backward_in, dout, dlast);
    // Positions past a sequence's length carry no gradient; whole-zero references are skipped.
    auto check = [&](const Tensor& t, const std::vector<double>& ref, const char* name) {
      ASSERT_TRUE(t.defined()) << name;
      double norm = 0;
      for (double v : ref) norm += v * v;
      if (norm == 0) return;
      EXPECT_LT(error_vs(t, ref), tol) << name << ", " << how;
    };
    check(g.du, r.du, "du");
    check(g.ddelta, r.ddelta, "ddelta");
    check(g.dA, r.dA, "dA");
    check(g.dB, r.dB, "dB");
    check(g.dC, r.dC, "dC");
    if (f.D) check(g.dD, r.dD, "dD");
    if (f.z) check(g.dz, r.dz, "dz");
    if (f.bias) check(g.ddelta_bias, r.dbias, "ddelta_bias");
    if (f.initial) check(g.dinitial_state, r.dinit, "dinitial_state");
  }
}

TEST(CudaSelectiveScan, SmallOddSizesF32) {
  SKIP_WITHOUT_GPU();
  for (int L : {1, 7, 2047, 2049}) check_scan({2, L, 13, 5}, {}, DType::f32, true, 100 + L);
}

TEST(CudaSelectiveScan, SmallOddSizesBf16) {
  SKIP_WITHOUT_GPU();
  for (int L : {1, 7, 2047, 2049}) check_scan({2, L, 11, 16}, {}, DType::bf16, true, 200 + L);
}

// Small enough for compute-sanitizer (scripts/gpu/run.sh test), yet several chunks and a split length.
TEST(CudaSelectiveScan, AllFeaturesSmall) {
  SKIP_WITHOUT_GPU();
  check_scan({2, 600, 13, 16}, {}, DType::f32, true, 5);
  check_scan({2, 600, 13, 16}, {}, DType::bf16, true, 6);
  check_scan({1, 4100, 5, 16}, {}, DType::f32, true, 16);  // few blocks: the length is split
  // bf16 with D a multiple of 8: the kernels' register prefetch of the next chunk (also across a
  // split's end)
  check_scan({2, 600, 16, 16}, {}, DType::bf16, true, 17);
  check_scan({1, 4100, 16, 16}, {}, DType::bf16, true, 18);
}

#ifdef MAMBACPP_CUDA  // the tuning knobs exist only in CUDA builds
// The scan's tuning variants (scan_launch.h) for a scope, the defaults again after it (also when a
// check throws).
struct ScanVariants {
  ScanVariants(int forward, int backward) {
    ops::cuda_detail::set_selective_scan_forward_variant(forward);
    ops::cuda_detail::set_selective_scan_backward_variant(backward);
  }
  ~ScanVariants() {
    ops::cuda_detail::set_selective_scan_forward_variant(ops::cuda_detail::kDefaultScanForwardVariant);
    ops::cuda_detail::set_selective_scan_backward_variant(ops::cuda_detail::kDefaultScanBackwardVariant);
  }
};

// The forward's tuning variants, and their chunk states through the backward (variant 1's chunks
// are not the backward's: it then runs variant 0; bf16 with N = 16 keeps its states every 32
// positions through the state-group forward, whatever the variant).
TEST(CudaSelectiveScan, ForwardVariants) {
  SKIP_WITHOUT_GPU();
  for (int variant : {0, 1, 2, 3}) {
    const ScanVariants variants(variant, ops::cuda_detail::kDefaultScanBackwardVariant);
    check_scan({2, 2049, 13, 16}, {}, DType::f32, true, 3);
    check_scan({3, 1500, 16, 16}, {}, DType::bf16, true, 4);
  }
}

// Variant 4 (four threads per channel, 4 states each) on the odd sizes the default kernel meets
// above: lengths of one, one tile, around a split boundary and 70000 (split), channels past the
// last whole block and short of a 16-byte vector, with and without the optional inputs.
TEST(CudaSelectiveScan, StateGroupForward) {
  SKIP_WITHOUT_GPU();
  const ScanVariants variants(4, ops::cuda_detail::kDefaultScanBackwardVariant);
  for (int L : {1, 7, 2047, 2049}) {
    check_scan({2, L, 37, 16}, {}, DType::f32, true, 400 + L);
    check_scan({2, L, 11, 16}, {}, DType::bf16, true, 500 + L);
  }
  check_scan({2, 600, 40, 16}, {}, DType::bf16, true, 21);
  check_scan({8, 300, 544, 16}, {}, DType::bf16, true, 22);
  check_scan({4, 520, 8448, 16}, {}, DType::bf16, true, 27);  // 32 warps per SM: unsplit
  Features bare;
  bare = {false, false, false, false, false, false, false};
  check_scan({3, 300, 9, 16}, bare, DType::f32, true, 23);
  check_scan({3, 2100, 48, 16}, bare, DType::bf16, true, 24);
  check_scan({1, 70000, 5, 16}, {}, DType::bf16, true, 25);
  check_scan({2, 70000, 24, 16}, {}, DType::f32, true, 26);
}

// The state-group kernels with the length cut into forced split counts (uneven ones too, and more
// splits than the planner picks for these sizes): the forward's output blocks chain every earlier
// split's summary themselves, the backward's chain runs last to first.
TEST(CudaSelectiveScan, StateGroupForcedSplitCounts) {
  SKIP_WITHOUT_GPU();
  for (auto [forward, backward] : {std::pair{3, 7}, {5, 2}, {9, 33}}) {
    SCOPED_TRACE("forward splits " + std::to_string(forward) + ", backward splits " + std::to_string(backward));
    ops::cuda_detail::set_selective_scan_splits(forward, backward);
    check_scan({2, 2400, 40, 16}, {}, DType::bf16, true, 600 + forward);
    check_scan({1, 2300, 9, 16}, {}, DType::f32, true, 700 + forward);
  }
  ops::cuda_detail::set_selective_scan_splits(0, 0);
}

// The lane-scan backward on the bf16 N = 16 inputs whose default is the state-group backward (it
// ignores their chunk states, kept every 32 positions, and recomputes its own every 256).
TEST(CudaSelectiveScan, LaneScanBackwardForBf16) {
  SKIP_WITHOUT_GPU();
  const ScanVariants variants(ops::cuda_detail::kDefaultScanForwardVariant, 0);
  check_scan({2, 600, 16, 16}, {}, DType::bf16, true, 28);
  check_scan({1, 4100, 11, 16}, {}, DType::bf16, true, 29);
  Features bare;
  bare = {false, false, false, false, false, false, false};
  check_scan({3, 300, 9, 16}, bare, DType::bf16, true, 30);
}
#endif

TEST(CudaSelectiveScan, NoOptionalInputs) {
  SKIP_WITHOUT_GPU();
  Features bare;
  bare = {false, false, false, false, false, false, false};
  check_scan({3, 300, 9, 16}, bare, DType::f32, true, 7);
  check_scan({3, 300, 9, 16}, bare, DType::bf16, true, 8);
}

// Enough blocks that the length is not split across blocks.
TEST(CudaSelectiveScan, WideUnsplitGrid) {
  SKIP_WITHOUT_GPU();
  check_scan({4, 600, 1000, 16}, {}, DType::f32, true, 9);
  check_scan({4, 600, 1000, 16}, {}, DType::bf16, true, 10);
  // Over 4 blocks per SM (132 SMs): the default forward runs 3 blocks per SM.
  check_scan({8, 300, 544, 16}, {}, DType::f32, true, 19);
  check_scan({8, 300, 544, 16}, {}, DType::bf16, true, 20);
}

TEST(CudaSelectiveScan, LongSequence70000) {
  SKIP_WITHOUT_GPU();
  check_scan({2, 70000, 3, 4}, {}, DType::f32, true, 11);
  check_scan({1, 70000, 5, 16}, {}, DType::bf16, true, 12);
}

TEST(CudaSelectiveScan, MillionTokensForward) {
  SKIP_WITHOUT_GPU();
  Features f;
  f.lengths = false;
  check_scan({1, 1 << 20, 2, 3}, f, DType::f32, false, 13);
}

TEST(CudaSelectiveScan, StepMatchesReference) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    Features f;
    f.lengths = false;
    f.dlast = false;
    // One step is a scan of length 1 from the initial state.
    const Problem p = make_problem({3, 1, 37, 16}, f, dtype, 14);
    const Reference r = reference(p, false);
    ops::ScanInputs in = gpu_inputs(p, dtype);
    for (Tensor* t : {&in.u, &in.delta, &in.z}) *t = t->view({3, 37});
    for (Tensor* t : {&in.B, &in.C}) *t = t->view({3, 16});
    Tensor state = in.initial_state.clone();
    const Tensor out = ops::selective_state_update(in, state);
    EXPECT_LT(error_vs(out, r.out), tolerance(dtype)) << dtype_name(dtype);
    EXPECT_LT(error_vs(state, r.last), 1e-5) << dtype_name(dtype);
  }
}

// dt_proj folded into the step (delta [batch, R], delta_proj [D, R]) for every weight dtype,
// against the float64 reference on the same values. R = 20 takes the scalar weight loads, R = 48
// the 16-byte ones (8 bf16 or 4 f32 per load), R = 136 also the pieces past those loaded before the
// kernel waits; N = 40 has states past the 4 per lane loaded early; D = 37 leaves a partial block.
// Batch 5 takes the four-lane groups (StepMatchesReference, batch 3, the eight-lane ones).
// Also the packed form (δ rows, B and C side by side, as x_proj writes them): bitwise the same
// step. R + 2N = 52 is not a whole number of 16-byte pieces (the scalar reads of δ), 80, 168 and
// 128 are; batch 1 and 5 take eight and four lanes per (sequence, channel).
TEST(CudaSelectiveScan, StepWithDeltaProjMatchesReference) {
  SKIP_WITHOUT_GPU();
  const int dim = 37;
  for (int batch : {1, 5}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (DType weight_dtype : {DType::f32, DType::bf16, DType::f16}) {
        for (auto [rank, n_states] : {std::pair{20, 16}, {48, 16}, {136, 16}, {48, 40}}) {
          SCOPED_TRACE(std::string(dtype_name(dtype)) + " weight " + dtype_name(weight_dtype) + " R " +
                       std::to_string(rank) + " N " + std::to_string(n_states) + " batch " + std::to_string(batch));
          Features f;
          f.lengths = false;
          f.dlast = false;
          const Problem p = make_problem({batch, 1, dim, n_states}, f, dtype, 16);
          ops::ScanInputs in = gpu_inputs(p, dtype);
          for (Tensor* t : {&in.u, &in.z}) *t = t->view({batch, dim});
          for (Tensor* t : {&in.B, &in.C}) *t = t->view({batch, n_states});
          Rng rng(17);
          in.delta = on_gpu(random_vector(rng, int64_t(batch) * rank, -1, 1), {batch, rank}, dtype);
          in.delta_proj = on_gpu(random_vector(rng, int64_t(dim) * rank, -0.3, 0.3), {dim, rank}, weight_dtype);
          ops::ScanInputs host = in;
          for (Tensor* t : {&host.u, &host.delta, &host.A, &host.B, &host.C, &host.D, &host.z, &host.delta_bias,
                            &host.delta_proj, &host.initial_state})
            *t = t->to(Device::cpu);
          Tensor state = in.initial_state.clone(), ref_state = host.initial_state.to(DType::f64);
          const Tensor out = ops::selective_state_update(in, state);
          const Tensor ref_out = ops::ref::selective_state_update(host, ref_state);
          EXPECT_LT(relative_error(out.to(Device::cpu), ref_out), tolerance(dtype));
          EXPECT_LT(relative_error(state.to(Device::cpu), ref_state), 1e-5);

          const Tensor delta_B_C = ops::concat_columns({in.delta, in.B, in.C});
          ops::ScanInputs packed = in;
          packed.delta = packed.B = packed.C = Tensor();
          Tensor packed_state = in.initial_state.clone();
          const Tensor packed_out = ops::selective_state_update_packed(packed, delta_B_C, packed_state);
          EXPECT_EQ(packed_out.to(Device::cpu).to_double_vector(), out.to(Device::cpu).to_double_vector());
          EXPECT_EQ(packed_state.to(Device::cpu).to_double_vector(), state.to(Device::cpu).to_double_vector());
        }
      }
    }
  }
}

TEST(CudaSelectiveScan, RejectsHostTensors) {
  SKIP_WITHOUT_GPU();
  const Problem p = make_problem({1, 4, 3, 2}, {}, DType::f32, 15);
  ops::ScanInputs in = gpu_inputs(p, DType::f32);
  in.B = in.B.to(Device::cpu);
  EXPECT_THROW(ops::selective_scan_forward(in), Error);
}

}  // namespace
}  // namespace mamba

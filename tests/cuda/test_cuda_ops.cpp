// GPU conv1d, add+norm, embedding, linear, LM-head cross-entropy and optimiser updates against the float64 reference
// ops (ops::ref) on the same values, random odd sizes, every output and every gradient. Calls go
// through the ops:: entry points (they dispatch on the device), so this links in every build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "cuda_test_util.h"
#include "ops/argmax.h"
#include "ops/causal_conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/in_projection_step.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/optimizer_update.h"

namespace mamba {
namespace {
using namespace cuda_test;

Tensor cpu64(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape, DType::f64); }

// a + b element by element.
std::vector<double> added(std::vector<double> a, const std::vector<double>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// Forward, backward and (from the initial state) steps against the reference. Sequence lengths
// batch × {L, 2, L/2 + 1} (capped at L) leave padded tails.
void check_conv(int L, int K, int C, DType dtype) {
  const int batch = 3, H = K - 1;
  const std::string where =
      "L " + std::to_string(L) + " K " + std::to_string(K) + " C " + std::to_string(C) + " " + dtype_name(dtype);
  Rng rng(21);
  const auto x = rounded(random_vector(rng, int64_t(batch) * L * C, -1, 1), dtype);
  const auto w = rounded(random_vector(rng, C * K, -0.5, 0.5), DType::f32);
  const auto bias = rounded(random_vector(rng, C, -0.5, 0.5), DType::f32);
  const auto init = rounded(random_vector(rng, int64_t(batch) * C * H, -1, 1), DType::f32);
  const auto dout = rounded(random_vector(rng, int64_t(batch) * L * C, -1, 1), dtype);
  const std::vector<double> lens = {double(L), double(std::min(L, 2)), double(L / 2 + 1)};
  auto inputs = [&](auto place, DType x_type, DType param_type) {
    ops::ConvInputs in;
    in.x = place(x, {batch, L, C}, x_type);
    in.weight = place(w, {C, K}, param_type);
    in.bias = place(bias, {C}, param_type);
    in.initial_state = place(init, {batch, C, H}, param_type);
    in.lengths = place(lens, {batch}, DType::i32);
    return in;
  };
  const auto cpu = [](const std::vector<double>& v, const Shape& s, DType t) { return Tensor::from_vector(v, s, t); };
  const ops::ConvInputs ref_in = inputs(cpu, DType::f64, DType::f64);
  const ops::ConvInputs in = inputs(on_gpu, dtype, DType::f32);
  const ops::ConvOutputs ref = ops::ref::causal_conv1d_forward(ref_in);
  const ops::ConvGrads ref_g = ops::ref::causal_conv1d_backward(ref_in, cpu64(dout, {batch, L, C}));
  const double tol = tolerance(dtype);
  const ops::ConvOutputs o = ops::causal_conv1d_forward(in);
  EXPECT_LT(error_vs(o.out, ref.out.to_double_vector()), tol) << where;
  EXPECT_LT(error_vs(o.final_state, ref.final_state.to_double_vector()), 1e-6) << where;
  const ops::ConvGrads g = ops::causal_conv1d_backward(in, on_gpu(dout, {batch, L, C}, dtype));
  EXPECT_LT(error_vs(g.dx, ref_g.dx.to_double_vector()), tol) << where;
  EXPECT_LT(error_vs(g.dweight, ref_g.dweight.to_double_vector()), tol) << where;
  EXPECT_LT(error_vs(g.dbias, ref_g.dbias.to_double_vector()), tol) << where;
  EXPECT_LT(error_vs(g.dinitial_state, ref_g.dinitial_state.to_double_vector()), tol) << where;
  // Into the caller's gradients (a model's): added onto what is there, none returned.
  const auto dw_prior = rounded(random_vector(rng, C * K, -1, 1), DType::f32);
  const auto db_prior = rounded(random_vector(rng, C, -1, 1), DType::f32);
  Tensor dw_into = on_gpu(dw_prior, {C, K}, DType::f32), db_into = on_gpu(db_prior, {C}, DType::f32);
  const ops::ConvGrads into = ops::causal_conv1d_backward(in, on_gpu(dout, {batch, L, C}, dtype), &dw_into, &db_into);
  EXPECT_FALSE(into.dweight.defined() || into.dbias.defined()) << where;
  EXPECT_LT(error_vs(dw_into, added(dw_prior, ref_g.dweight.to_double_vector())), tol) << where;
  EXPECT_LT(error_vs(db_into, added(db_prior, ref_g.dbias.to_double_vector())), tol) << where;

  // Steps from the initial state match the reference step.
  Tensor state = in.initial_state.clone();
  Tensor ref_state = ref_in.initial_state.clone();
  ops::ConvInputs step = in, ref_step = ref_in;
  for (int t = 0; t < std::min(3, L); ++t) {
    std::vector<double> xt;
    for (int b = 0; b < batch; ++b)
      for (int c = 0; c < C; ++c) xt.push_back(x[(size_t(b) * L + t) * C + c]);
    step.x = on_gpu(xt, {batch, C}, dtype);
    ref_step.x = cpu64(xt, {batch, C});
    const Tensor y = ops::causal_conv1d_step(step, state);
    const Tensor y_ref = ops::ref::causal_conv1d_step(ref_step, ref_state);
    EXPECT_LT(error_vs(y, y_ref.to_double_vector()), tol) << "step " << t << ", " << where;
    EXPECT_LT(error_vs(state, ref_state.to_double_vector()), 1e-6) << "step " << t << ", " << where;
  }
}

// L = 150 spans three position segments of 64 (the last partial); C = 44 and 45 fill whole and
// partial warps of channels (44: the forward's channel pairs, 45: single channels); widths 4 and 3
// shift the backward's K − 1 lag against the batches of positions loaded together.
TEST(CudaCausalConv1d, ForwardBackwardStep) {
  SKIP_WITHOUT_GPU();
  for (int C : {45, 44})
    for (DType dtype : {DType::f32, DType::bf16}) check_conv(150, 4, C, dtype);
  for (int L : {1, 7, 2047, 2049})
    for (int K : {4, 3}) check_conv(L, K, 45, DType::bf16);
  check_conv(2049, 4, 45, DType::f32);
  for (int L : {1, 7, 2049}) check_conv(L, 3, 44, DType::bf16);
  check_conv(2049, 4, 300, DType::f32);  // channel pairs past one block of 128 threads
}

void check_norm(ops::NormKind kind, DType dtype, bool with_residual, int d) {
  const int M = 23;
  Rng rng(31 + int(kind));
  // 16-bit activations come with a 16-bit weight, as in a bf16 model.
  const auto x = rounded(random_vector(rng, M * d, -2, 2), dtype);
  const auto res = rounded(random_vector(rng, M * d, -1, 1), DType::f32);
  const auto w = rounded(random_vector(rng, d, 0.5, 1.5), dtype);
  const auto bias = rounded(random_vector(rng, d, -0.5, 0.5), DType::f32);
  const auto dout = rounded(random_vector(rng, M * d, -1, 1), dtype);
  const auto dres = rounded(random_vector(rng, M * d, -1, 1), DType::f32);
  const bool layer = kind == ops::NormKind::layer;
  ops::NormInputs in, ref_in;
  in.kind = ref_in.kind = kind;
  in.x = on_gpu(x, {M, d}, dtype);
  ref_in.x = cpu64(x, {M, d});
  if (with_residual) {
    in.residual = on_gpu(res, {M, d}, DType::f32);
    ref_in.residual = cpu64(res, {M, d});
  }
  in.weight = on_gpu(w, {d}, dtype);
  ref_in.weight = cpu64(w, {d});
  if (layer) {
    in.bias = on_gpu(bias, {d}, DType::f32);
    ref_in.bias = cpu64(bias, {d});
  }
  const ops::NormOutputs ref = ops::ref::add_norm_forward(ref_in);
  const ops::NormGrads ref_g = ops::ref::add_norm_backward(ref_in, ref, cpu64(dout, {M, d}), cpu64(dres, {M, d}));
  const double tol = tolerance(dtype);
  const ops::NormOutputs o = ops::add_norm_forward(in);
  EXPECT_LT(error_vs(o.out, ref.out.to_double_vector()), tol);
  EXPECT_LT(error_vs(o.residual_out, ref.residual_out.to_double_vector()), 1e-6);
  EXPECT_LT(error_vs(o.rstd, ref.rstd.to_double_vector()), 1e-5);
  const ops::NormGrads g = ops::add_norm_backward(in, o, on_gpu(dout, {M, d}, dtype), on_gpu(dres, {M, d}, DType::f32));
  EXPECT_LT(error_vs(g.ds, ref_g.ds.to_double_vector()), tol);
  ASSERT_EQ(g.dx.dtype(), dtype);  // ds rounded to the dtype of x, exactly
  EXPECT_EQ(g.dx.to_double_vector(), g.ds.to(Device::cpu).to(dtype).to_double_vector());
  EXPECT_LT(error_vs(g.dweight, ref_g.dweight.to_double_vector()), tol);
  if (layer) {
    EXPECT_LT(error_vs(g.dbias, ref_g.dbias.to_double_vector()), tol);
  }
  // Into the caller's gradients (a model's): added onto what is there, none returned.
  const auto dw_prior = rounded(random_vector(rng, d, -1, 1), DType::f32);
  const auto db_prior = rounded(random_vector(rng, d, -1, 1), DType::f32);
  Tensor dw_into = on_gpu(dw_prior, {d}, DType::f32), db_into = on_gpu(db_prior, {d}, DType::f32);
  const ops::NormGrads into = ops::add_norm_backward(
      in, o, on_gpu(dout, {M, d}, dtype), on_gpu(dres, {M, d}, DType::f32), &dw_into, layer ? &db_into : nullptr);
  EXPECT_FALSE(into.dweight.defined() || into.dbias.defined());
  EXPECT_LT(error_vs(dw_into, added(dw_prior, ref_g.dweight.to_double_vector())), tol);
  if (layer) {
    EXPECT_LT(error_vs(db_into, added(db_prior, ref_g.dbias.to_double_vector())), tol);
  }
}

// Widths for each register layout of the kernels (forward: 4, 8 and 16 columns per thread of 256;
// backward: 4 columns a thread of 256, 4 or 8 of 512).
TEST(CudaAddNorm, RmsAndLayerNorm) {
  SKIP_WITHOUT_GPU();
  // One column a load at odd widths, four at multiples of 4.
  for (int d : {77, 1022, 64, 1500, 1501, 2048, 2600, 4093})
    for (DType dtype : {DType::f32, DType::bf16})
      for (bool residual : {false, true}) {
        SCOPED_TRACE("d " + std::to_string(d));
        check_norm(ops::NormKind::rms, dtype, residual, d);
        check_norm(ops::NormKind::layer, dtype, residual, d);
      }
}

TEST(CudaEmbedding, LookupGradientAndBadIds) {
  SKIP_WITHOUT_GPU();
  const int V = 29, d = 13, M = 41;
  Rng rng(41);
  const auto w = rounded(random_vector(rng, V * d, -1, 1), DType::f32);
  const auto dout = rounded(random_vector(rng, M * d, -1, 1), DType::f32);
  std::vector<double> ids(M);
  for (double& id : ids) id = double(rng.below(V));
  const Tensor ref = ops::ref::embedding_forward(cpu64(w, {V, d}), Tensor::from_vector(ids, {M}, DType::i64));
  Tensor ref_dw = Tensor::zeros({V, d}, DType::f64);
  ops::ref::embedding_backward(Tensor::from_vector(ids, {M}, DType::i64), cpu64(dout, {M, d}), ref_dw);
  EXPECT_LT(error_vs(ops::embedding_forward(on_gpu(w, {V, d}, DType::f32), on_gpu(ids, {M}, DType::i64)),
                     ref.to_double_vector()),
            1e-7);
  Tensor dweight = Tensor::zeros({V, d}, DType::f32, Device::cuda);
  ops::embedding_backward(on_gpu(ids, {M}, DType::i32), on_gpu(dout, {M, d}, DType::f32), dweight);
  EXPECT_LT(error_vs(dweight, ref_dw.to_double_vector()), 1e-6);
  ids[17] = V;
  EXPECT_THROW(ops::embedding_forward(on_gpu(w, {V, d}, DType::f32), on_gpu(ids, {M}, DType::i32)), Error);
}

// The mat-vec kernel of small batches (1–4 rows; 5 rows go to cuBLASLt): float32 x with f32 or
// bf16 weights and a bias, K not a multiple of the 1024 positions a warp covers per round, against
// the float64 reference. Weights are what the GPU reads; x is not rounded.
TEST(CudaLinear, SmallBatchMatVec) {
  SKIP_WITHOUT_GPU();
  const int K = 1064, N = 75;
  for (DType wtype : {DType::f32, DType::bf16}) {
    for (int M : {1, 3, 4}) {
      SCOPED_TRACE(std::string(dtype_name(wtype)) + " M " + std::to_string(M));
      Rng rng(uint64_t(60 + M));
      const auto x = rounded(random_vector(rng, M * K, -1, 1), DType::f32);
      const auto w = rounded(random_vector(rng, N * K, -1, 1), wtype);
      const auto b = rounded(random_vector(rng, N, -1, 1), DType::f32);
      const Tensor ref = ops::ref::linear_forward(cpu64(x, {M, K}), cpu64(w, {N, K}), cpu64(b, {N}));
      const Tensor y =
          ops::linear_forward(on_gpu(x, {M, K}, DType::f32), on_gpu(w, {N, K}, wtype), on_gpu(b, {N}, DType::f32));
      EXPECT_EQ(y.dtype(), DType::f32);
      EXPECT_LT(error_vs(y, ref.to_double_vector()), 1e-6);
    }
  }
}

TEST(CudaLinear, ForwardBackward) {
  SKIP_WITHOUT_GPU();
  const int M = 33, K = 70, N = 21;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Rng rng(51);
    const auto x = rounded(random_vector(rng, M * K, -1, 1), dtype);
    const auto w = rounded(random_vector(rng, N * K, -1, 1), dtype);
    const auto b = rounded(random_vector(rng, N, -1, 1), DType::f32);
    const auto dy = rounded(random_vector(rng, M * N, -1, 1), dtype);
    const Tensor ref_y = ops::ref::linear_forward(cpu64(x, {M, K}), cpu64(w, {N, K}), cpu64(b, {N}));
    // dW accumulates onto what is there: start from ones.
    Tensor ref_dw = cpu64(std::vector<double>(N * K, 1.0), {N, K}), ref_db = Tensor::zeros({N}, DType::f64);
    const Tensor ref_dx =
        ops::ref::linear_backward(cpu64(x, {M, K}), cpu64(w, {N, K}), cpu64(dy, {M, N}), &ref_dw, &ref_db);
    const Tensor gx = on_gpu(x, {M, K}, dtype), gw = on_gpu(w, {N, K}, dtype);
    const double tol = tolerance(dtype);
    EXPECT_LT(error_vs(ops::linear_forward(gx, gw, on_gpu(b, {N}, DType::f32)), ref_y.to_double_vector()), tol);
    Tensor dweight = on_gpu(std::vector<double>(N * K, 1.0), {N, K}, DType::f32);
    Tensor dbias = Tensor::zeros({N}, DType::f32, Device::cuda);
    const Tensor gdx = ops::linear_backward(gx, gw, on_gpu(dy, {M, N}, dtype), &dweight, &dbias);
    EXPECT_LT(error_vs(gdx, ref_dx.to_double_vector()), tol);
    EXPECT_LT(error_vs(dweight, ref_dw.to_double_vector()), tol);
    EXPECT_LT(error_vs(dbias, ref_db.to_double_vector()), tol);
    // Decode shape (one row), no bias.
    const Tensor ref_row = ops::ref::linear_forward(cpu64({x.begin(), x.begin() + K}, {1, K}), cpu64(w, {N, K}));
    EXPECT_LT(error_vs(ops::linear_forward(gx.slice(0, 1), gw, Tensor()), ref_row.to_double_vector()), tol);
  }
}

// linear_forward_split / linear_backward_split against the float64 reference of the whole product:
// wide pieces (a product each over their rows of W, dx summed over them, onto dx_into) and a
// narrow one (one product, split after / joined before).
// M = 12 (a batched decode step): f32 wide pieces come from one product and a copy, bf16 ones from
// the decode product; M = 33: a product per wide piece.
TEST(CudaLinear, SplitPiecesForwardBackward) {
  SKIP_WITHOUT_GPU();
  const int K = 40;
  for (int M : {33, 12})
    for (DType dtype : {DType::f32, DType::bf16})
      for (const std::vector<int64_t>& widths : {std::vector<int64_t>{256, 264}, std::vector<int64_t>{5, 515}}) {
        const int N = int(widths[0] + widths[1]);
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " M " + std::to_string(M) + " first width " +
                     std::to_string(widths[0]));
        Rng rng(uint64_t(56 + widths[0]));
        const auto x = rounded(random_vector(rng, M * K, -1, 1), dtype);
        const auto w = rounded(random_vector(rng, N * K, -1, 1), dtype);
        const auto b = rounded(random_vector(rng, N, -1, 1), DType::f32);
        const auto dy = rounded(random_vector(rng, M * N, -1, 1), dtype);
        const auto start = rounded(random_vector(rng, M * K, -1, 1), dtype);
        const std::vector<double> y =
            ops::ref::linear_forward(cpu64(x, {M, K}), cpu64(w, {N, K}), cpu64(b, {N})).to_double_vector();
        Tensor ref_dw = cpu64(std::vector<double>(N * K, 1.0), {N, K}), ref_db = Tensor::zeros({N}, DType::f64);
        std::vector<double> ref_dx =
            ops::ref::linear_backward(cpu64(x, {M, K}), cpu64(w, {N, K}), cpu64(dy, {M, N}), &ref_dw, &ref_db)
                .to_double_vector();
        for (size_t i = 0; i < ref_dx.size(); ++i) ref_dx[i] += start[i];
        auto columns = [&](const std::vector<double>& all, int64_t begin, int64_t width) {
          std::vector<double> out;
          for (int m = 0; m < M; ++m)
            out.insert(out.end(), all.begin() + m * N + begin, all.begin() + m * N + begin + width);
          return out;
        };
        const Tensor gx = on_gpu(x, {M, K}, dtype), gw = on_gpu(w, {N, K}, dtype);
        const std::vector<Tensor> pieces = ops::linear_forward_split(gx, gw, widths, on_gpu(b, {N}, DType::f32));
        std::vector<Tensor> dy_pieces;
        for (size_t p = 0, begin = 0; p < widths.size(); begin += size_t(widths[p]), ++p) {
          EXPECT_LT(error_vs(pieces[p], columns(y, int64_t(begin), widths[p])), tolerance(dtype)) << "piece " << p;
          dy_pieces.push_back(on_gpu(columns(dy, int64_t(begin), widths[p]), {M, widths[p]}, dtype));
        }
        Tensor dweight = on_gpu(std::vector<double>(N * K, 1.0), {N, K}, DType::f32);
        Tensor dbias = Tensor::zeros({N}, DType::f32, Device::cuda);
        Tensor into = on_gpu(start, {M, K}, dtype);
        const Tensor dx = ops::linear_backward_split(gx, gw, dy_pieces, &dweight, &dbias, &into);
        EXPECT_EQ(dx.raw(), into.raw());
        EXPECT_LT(error_vs(into, ref_dx), tolerance(dtype));
        EXPECT_LT(error_vs(dweight, ref_dw.to_double_vector()), tolerance(dtype));
        EXPECT_LT(error_vs(dbias, ref_db.to_double_vector()), tolerance(dtype));
      }
}

// dx added onto a tensor that already holds values (dx_into: the product's beta = 1), at row counts
// 1, 7, 2047 and 2049 and odd widths.
TEST(CudaLinear, BackwardAddsIntoDxInto) {
  SKIP_WITHOUT_GPU();
  const int K = 75, N = 21;
  for (DType dtype : {DType::f32, DType::bf16})
    for (int M : {1, 7, 2047, 2049}) {
      Rng rng(52 + M);
      const auto x = rounded(random_vector(rng, int64_t(M) * K, -1, 1), dtype);
      const auto w = rounded(random_vector(rng, N * K, -1, 1), dtype);
      const auto dy = rounded(random_vector(rng, int64_t(M) * N, -1, 1), dtype);
      const auto start = rounded(random_vector(rng, int64_t(M) * K, -1, 1), dtype);
      std::vector<double> expected =
          ops::ref::linear_backward(cpu64(x, {M, K}), cpu64(w, {N, K}), cpu64(dy, {M, N}), nullptr, nullptr)
              .to_double_vector();
      for (size_t i = 0; i < expected.size(); ++i) expected[i] += start[i];
      Tensor into = on_gpu(start, {M, K}, dtype);
      const Tensor dx = ops::linear_backward(on_gpu(x, {M, K}, dtype), on_gpu(w, {N, K}, dtype),
                                             on_gpu(dy, {M, N}, dtype), nullptr, nullptr, &into);
      EXPECT_EQ(dx.raw(), into.raw());
      EXPECT_LT(error_vs(into, expected), tolerance(dtype)) << dtype_name(dtype) << " M " << M;
    }
}

// The tensor-core decode product (bf16 x and W, up to 16 rows) against the float64 reference:
// N not a multiple of the 8 columns of a tile, K a multiple of 8 but not of the 32 positions of a
// warp step; a K of 4104 gives each warp three batches of weight loads, and N = 4237 more column
// tiles than blocks (blocks walk several). linear_forward_split's pieces are the reference's columns.
TEST(CudaLinear, DecodeProductBf16) {
  SKIP_WITHOUT_GPU();
  struct Size {
    int K, N;
  };
  for (const Size size : {Size{1064, 75}, Size{4104, 37}, Size{776, 4237}, Size{40, 21}}) {
    for (int M : {1, 3, 16}) {
      const int K = size.K, N = size.N;
      SCOPED_TRACE("M " + std::to_string(M) + " K " + std::to_string(K) + " N " + std::to_string(N));
      Rng rng(uint64_t(70 + M + K));
      const auto x = rounded(random_vector(rng, int64_t(M) * K, -1, 1), DType::bf16);
      const auto w = rounded(random_vector(rng, int64_t(N) * K, -1, 1), DType::bf16);
      const auto b = rounded(random_vector(rng, N, -1, 1), DType::f32);
      const Tensor ref = ops::ref::linear_forward(cpu64(x, {M, K}), cpu64(w, {N, K}), cpu64(b, {N}));
      const Tensor gx = on_gpu(x, {M, K}, DType::bf16), gw = on_gpu(w, {N, K}, DType::bf16);
      const Tensor y = ops::linear_forward(gx, gw, on_gpu(b, {N}, DType::f32));
      EXPECT_EQ(y.dtype(), DType::bf16);
      EXPECT_LT(error_vs(y, ref.to_double_vector()), 1e-2);

      const std::vector<int64_t> widths = {5, N - 5 - N / 3, N / 3};
      const std::vector<Tensor> pieces = ops::linear_forward_split(gx, gw, widths);
      const Tensor ref_plain = ops::ref::linear_forward(cpu64(x, {M, K}), cpu64(w, {N, K}));
      const std::vector<double> all = ref_plain.to_double_vector();
      ASSERT_EQ(pieces.size(), widths.size());
      int64_t begin = 0;
      for (size_t p = 0; p < widths.size(); ++p) {
        std::vector<double> expected;
        for (int m = 0; m < M; ++m)
          expected.insert(expected.end(), all.begin() + m * N + begin, all.begin() + m * N + begin + widths[p]);
        EXPECT_EQ(pieces[p].shape(), (Shape{M, widths[p]}));
        EXPECT_LT(error_vs(pieces[p], expected), 1e-2) << "piece " << p;
        begin += widths[p];
      }
    }
  }
}

// The fused in-projection of a decode step against the composed float64 reference (add + RMSNorm,
// product, conv step + SiLU): d = 72 at 1 and 3 rows takes the fused kernel (2C = 74 columns, not a
// multiple of 8), at 16 rows and d = 70 (not a multiple of 8) the product path; with and without a
// residual.
// C = 9000 at d = 256: the fused kernel's blocks each walk two tiles of conv columns, which wait in
// shared memory for the conv step after the block's last tile.
TEST(CudaInProjectionStep, MatchesComposedReference) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int d, C, width;
    bool conv_bias;
  };
  // The model's conv width 4 with bias at every shape; widths 2, 3 and 5, with and without bias.
  const Case cases[] = {{72, 37, 4, true},  {70, 37, 4, true}, {256, 9000, 4, true}, {1000, 300, 4, true},
                        {72, 37, 2, false}, {72, 37, 5, true}, {1000, 300, 3, false}};
  for (const auto& [d, C, width, with_conv_bias] : cases)
    for (int batch : {1, 3, 16})
      for (bool with_residual : {true, false}) {
        SCOPED_TRACE("d " + std::to_string(d) + " C " + std::to_string(C) + " width " + std::to_string(width) +
                     " batch " + std::to_string(batch) + (with_residual ? " residual" : "") +
                     (with_conv_bias ? " conv bias" : ""));
        const int H = width - 1;
        Rng rng(uint64_t(90 + d + batch));
        const auto x = rounded(random_vector(rng, int64_t(batch) * d, -1, 1), DType::bf16);
        const auto residual = rounded(random_vector(rng, int64_t(batch) * d, -1, 1), DType::f32);
        const auto norm_w = rounded(random_vector(rng, d, 0.5, 1.5), DType::f32);
        const auto w = rounded(random_vector(rng, 2 * C * d, -0.3, 0.3), DType::bf16);
        const auto bias = rounded(random_vector(rng, 2 * C, -0.5, 0.5), DType::f32);
        const auto conv_w = rounded(random_vector(rng, C * width, -0.5, 0.5), DType::f32);
        const auto conv_b = rounded(random_vector(rng, C, -0.5, 0.5), DType::f32);
        const auto state = rounded(random_vector(rng, int64_t(batch) * C * H, -1, 1), DType::f32);

        const ops::NormOutputs ref_norm =
            ops::ref::add_norm_forward({cpu64(x, {batch, d}),
                                        with_residual ? cpu64(residual, {batch, d}) : Tensor{},
                                        cpu64(norm_w, {d}),
                                        {},
                                        1e-5f,
                                        ops::NormKind::rms});
        const std::vector<double> xz =
            ops::ref::linear_forward(ref_norm.out, cpu64(w, {2 * C, d}), cpu64(bias, {2 * C})).to_double_vector();
        std::vector<double> x_half, z_half;
        for (int b = 0; b < batch; ++b) {
          x_half.insert(x_half.end(), xz.begin() + b * 2 * C, xz.begin() + b * 2 * C + C);
          z_half.insert(z_half.end(), xz.begin() + b * 2 * C + C, xz.begin() + (b + 1) * 2 * C);
        }
        Tensor ref_state = cpu64(state, {batch, C, H});
        const Tensor ref_x_conv = ops::ref::causal_conv1d_step({cpu64(x_half, {batch, C}),
                                                                cpu64(conv_w, {C, width}),
                                                                with_conv_bias ? cpu64(conv_b, {C}) : Tensor{},
                                                                {},
                                                                {},
                                                                true},
                                                               ref_state);

        Tensor gpu_state = on_gpu(state, {batch, C, H}, DType::f32);
        const ops::InProjectionOutputs out =
            ops::in_projection_step({{on_gpu(x, {batch, d}, DType::bf16),
                                      with_residual ? on_gpu(residual, {batch, d}, DType::f32) : Tensor{},
                                      on_gpu(norm_w, {d}, DType::f32),
                                      {},
                                      1e-5f,
                                      ops::NormKind::rms},
                                     on_gpu(w, {2 * C, d}, DType::bf16),
                                     on_gpu(bias, {2 * C}, DType::f32),
                                     on_gpu(conv_w, {C, 1, width}, DType::f32),
                                     with_conv_bias ? on_gpu(conv_b, {C}, DType::f32) : Tensor{}},
                                    gpu_state);
        EXPECT_LT(error_vs(out.x_conv, ref_x_conv.to_double_vector()), 1e-2);
        EXPECT_LT(error_vs(out.z, z_half), 1e-2);
        EXPECT_LT(error_vs(out.residual_out, ref_norm.residual_out.to_double_vector()), 1e-6);
        EXPECT_LT(error_vs(gpu_state, ref_state.to_double_vector()), 1e-2);
      }
}

// Two steps launched back to back (the second, an overlapping launch, may start before the first
// ends) must chain: the second reads the conv state the first wrote.
TEST(CudaInProjectionStep, BackToBackStepsChainTheConvState) {
  SKIP_WITHOUT_GPU();
  const int d = 1000, C = 300, width = 4, H = width - 1, batch = 2;
  Rng rng(4242);
  const auto norm_w = rounded(random_vector(rng, d, 0.5, 1.5), DType::f32);
  const auto w = rounded(random_vector(rng, 2 * C * d, -0.3, 0.3), DType::bf16);
  const auto conv_w = rounded(random_vector(rng, C * width, -0.5, 0.5), DType::f32);
  const auto conv_b = rounded(random_vector(rng, C, -0.5, 0.5), DType::f32);
  const auto state = rounded(random_vector(rng, int64_t(batch) * C * H, -1, 1), DType::f32);
  std::vector<std::vector<double>> xs;
  for (int step = 0; step < 2; ++step)
    xs.push_back(rounded(random_vector(rng, int64_t(batch) * d, -1, 1), DType::bf16));

  const Tensor gpu_norm_w = on_gpu(norm_w, {d}, DType::f32), gpu_w = on_gpu(w, {2 * C, d}, DType::bf16);
  const Tensor gpu_conv_w = on_gpu(conv_w, {C, width}, DType::f32), gpu_conv_b = on_gpu(conv_b, {C}, DType::f32);
  const Tensor gpu_x[2] = {on_gpu(xs[0], {batch, d}, DType::bf16), on_gpu(xs[1], {batch, d}, DType::bf16)};
  Tensor gpu_state = on_gpu(state, {batch, C, H}, DType::f32);
  std::vector<ops::InProjectionOutputs> outs;
  for (int step = 0; step < 2; ++step)
    outs.push_back(ops::in_projection_step(
        {{gpu_x[step], {}, gpu_norm_w, {}, 1e-5f, ops::NormKind::rms}, gpu_w, {}, gpu_conv_w, gpu_conv_b}, gpu_state));

  Tensor ref_state = cpu64(state, {batch, C, H});
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const ops::NormOutputs normed = ops::ref::add_norm_forward(
        {cpu64(xs[step], {batch, d}), {}, cpu64(norm_w, {d}), {}, 1e-5f, ops::NormKind::rms});
    const std::vector<double> xz = ops::ref::linear_forward(normed.out, cpu64(w, {2 * C, d}), {}).to_double_vector();
    std::vector<double> x_half;
    for (int b = 0; b < batch; ++b) x_half.insert(x_half.end(), xz.begin() + b * 2 * C, xz.begin() + b * 2 * C + C);
    const Tensor ref_x_conv = ops::ref::causal_conv1d_step(
        {cpu64(x_half, {batch, C}), cpu64(conv_w, {C, width}), cpu64(conv_b, {C}), {}, {}, true}, ref_state);
    EXPECT_LT(error_vs(outs[step].x_conv, ref_x_conv.to_double_vector()), 1e-2);
  }
  EXPECT_LT(error_vs(gpu_state, ref_state.to_double_vector()), 1e-2);
}

// Where the fused kernel does not run (W_in past 4M elements above 4 rows; d = 70: not a multiple of
// 8; f32 x), up to 16 rows run as the norm, one product and one kernel for the conv step of the x half and the
// copy of the z half: bitwise the ops one after another (add_norm_forward, linear_forward_split,
// causal_conv1d_step). d = 1032 with 2C = 4100 is a W_in on cuBLASLt, as the 1.4b shape's.
TEST(CudaInProjectionStep, ProductPathEqualsTheOps) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int d, C, batch;
    DType x_dtype;
  };
  for (const Case& c : {Case{70, 37, 3, DType::bf16}, Case{1032, 2050, 16, DType::bf16},
                        Case{1032, 2050, 5, DType::bf16}, Case{70, 37, 16, DType::bf16}, Case{72, 37, 2, DType::f32}}) {
    SCOPED_TRACE("d " + std::to_string(c.d) + " C " + std::to_string(c.C) + " batch " + std::to_string(c.batch) + " " +
                 dtype_name(c.x_dtype));
    const int width = 4;
    Rng rng(uint64_t(300 + c.d + c.batch));
    const ops::NormInputs norm{on_gpu(random_vector(rng, int64_t(c.batch) * c.d, -1, 1), {c.batch, c.d}, c.x_dtype),
                               on_gpu(random_vector(rng, int64_t(c.batch) * c.d, -1, 1), {c.batch, c.d}, DType::f32),
                               on_gpu(random_vector(rng, c.d, 0.5, 1.5), {c.d}, DType::f32),
                               {},
                               1e-5f,
                               ops::NormKind::rms};
    const Tensor w = on_gpu(random_vector(rng, int64_t(2) * c.C * c.d, -0.3, 0.3), {2 * c.C, c.d}, DType::bf16);
    const Tensor bias = on_gpu(random_vector(rng, 2 * c.C, -0.5, 0.5), {2 * c.C}, DType::f32);
    const Tensor conv_w = on_gpu(random_vector(rng, int64_t(c.C) * width, -0.5, 0.5), {c.C, width}, DType::f32);
    const Tensor conv_b = on_gpu(random_vector(rng, c.C, -0.5, 0.5), {c.C}, DType::f32);
    Tensor state =
        on_gpu(random_vector(rng, int64_t(c.batch) * c.C * (width - 1), -1, 1), {c.batch, c.C, width - 1}, DType::f32);
    Tensor ops_state = state.clone();
    const ops::InProjectionOutputs out = ops::in_projection_step({norm, w, bias, conv_w, conv_b}, state);

    const ops::NormOutputs normed = ops::add_norm_forward(norm);
    const std::vector<Tensor> xz = ops::linear_forward_split(normed.out, w, {c.C, c.C}, bias);
    const Tensor x_conv = ops::causal_conv1d_step({xz[0], conv_w, conv_b, {}, {}, true}, ops_state);
    EXPECT_EQ(out.x_conv.to_double_vector(), x_conv.to_double_vector());
    EXPECT_EQ(out.z.to_double_vector(), xz[1].to_double_vector());
    EXPECT_EQ(out.residual_out.to_double_vector(), normed.residual_out.to_double_vector());
    EXPECT_EQ(state.to_double_vector(), ops_state.to_double_vector());
  }
}

// The GPU argmax against the reference on random rows with planted ties (the first wins) and
// NaN, f32 and bf16, rows longer than a block's threads, only the first `columns` counted. Rows of
// 5003 read one element at a time; rows of 50,280 (the vocabulary) as 16-byte vectors, in several
// rounds, and with 50,277 columns the last few one at a time (row 0's maximum lies there).
TEST(CudaArgmax, MatchesReference) {
  SKIP_WITHOUT_GPU();
  const int M = 16;
  for (int V : {5003, 50280}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      Rng rng(77);
      auto x = rounded(random_vector(rng, int64_t(M) * V, -4, 4), dtype);
      for (int m = 0; m < M; ++m) {
        x[size_t(m * V + 7 * m + 11)] = 9;  // a tie: the earlier one wins
        x[size_t(m * V + V - 1 - m)] = 9;
        x[size_t(m * V + 3)] = std::nan("");
      }
      if (V == 50280) x[50276] = 10;
      const Tensor gx = on_gpu(x, {M, V}, dtype);
      for (int64_t columns : {int64_t(-1), int64_t(4000), int64_t(V == 50280 ? 50277 : 4001)}) {
        const Tensor want = ops::ref::argmax_rows(cpu64(x, {M, V}), columns);
        const Tensor got = ops::argmax_rows(gx, columns);
        EXPECT_EQ(got.to_double_vector(), want.to_double_vector())
            << dtype_name(dtype) << " V " << V << " columns " << columns;
        Tensor first = Tensor::zeros({M}, DType::i32, Device::cuda), second = first.clone();
        ops::argmax_rows_into(gx, columns, {first, second});
        EXPECT_EQ(first.to_double_vector(), want.to_double_vector());
        EXPECT_EQ(second.to_double_vector(), want.to_double_vector());
      }
    }
  }
}

// A = −exp(A_log) and dA_log += dA ⊙ A where the parameters live: against float64.
TEST(CudaElementwise, NegativeExpAndAddProduct) {
  SKIP_WITHOUT_GPU();
  Rng rng(78);
  const int64_t D = 1537, N = 16;
  for (DType dtype : {DType::f32, DType::bf16}) {
    const auto a_log = rounded(random_vector(rng, D * N, -1, 3), dtype);
    std::vector<double> want;
    for (double v : a_log) want.push_back(-std::exp(v));
    const Tensor a = ops::negative_exp(on_gpu(a_log, {D, N}, dtype));
    EXPECT_EQ(a.dtype(), DType::f32);
    EXPECT_LT(error_vs(a, want), 1e-6) << dtype_name(dtype);
  }
  const auto s = random_vector(rng, D * N, -1, 1), b = random_vector(rng, D * N, -1, 1),
             c = random_vector(rng, D * N, -1, 1);
  Tensor sum = on_gpu(s, {D, N}, DType::f32);
  ops::add_product_(sum, on_gpu(b, {D, N}, DType::f32), on_gpu(c, {D, N}, DType::f32));
  std::vector<double> want(s.size());
  for (size_t i = 0; i < s.size(); ++i) want[i] = double(float(s[i])) + double(float(b[i])) * double(float(c[i]));
  EXPECT_LT(error_vs(sum, want), 1e-6);
}

// Column splits and joins are exact copies, in 16-, 8-, 4- and 2-byte units by the widths.
TEST(CudaElementwise, SplitAndConcatColumns) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::f32, DType::bf16})
    for (const std::vector<int64_t>& widths :
         {std::vector<int64_t>{8, 3, 16, 2, 4}, std::vector<int64_t>{8, 16, 16}, std::vector<int64_t>{4, 36}}) {
      Rng rng(66);
      const int64_t rows = 37;
      int64_t total = 0;
      for (int64_t w : widths) total += w;
      const Tensor x = Tensor::from_vector(random_vector(rng, rows * total, -1, 1), {rows, total}, dtype);
      const std::vector<Tensor> cpu_parts = ops::split_columns(x, widths);
      const std::vector<Tensor> gpu_parts = ops::split_columns(x.to(Device::cuda), widths);
      for (size_t p = 0; p < widths.size(); ++p)
        EXPECT_EQ(gpu_parts[p].to_double_vector(), cpu_parts[p].to_double_vector()) << dtype_name(dtype) << " " << p;
      EXPECT_EQ(ops::concat_columns(gpu_parts).to_double_vector(), x.to_double_vector()) << dtype_name(dtype);
    }
}

// The fused LM head + cross-entropy on the GPU against the float64 reference on the same inputs
// (rounded to `dtype`), rows with target -1 ignored every `ignore_every` rows; returns the targets.
std::vector<double> check_cross_entropy(int M, int d, int V, DType dtype, int ignore_every, double tolerance,
                                        uint64_t seed) {
  Rng rng(seed);
  const auto h = rounded(random_vector(rng, M * d, -1, 1), dtype);
  const auto w = rounded(random_vector(rng, V * d, -1, 1), dtype);
  std::vector<double> targets(M);
  for (int i = 0; i < M; ++i) targets[i] = i % ignore_every == 1 ? -1.0 : double(rng.below(V));
  Tensor ref_dw = Tensor::zeros({V, d}, DType::f64);
  const ops::CrossEntropyResult ref = ops::ref::lm_head_cross_entropy(
      cpu64(h, {M, d}), cpu64(w, {V, d}), Tensor::from_vector(targets, {M}, DType::i32), true, &ref_dw);
  Tensor dweight = Tensor::zeros({V, d}, DType::f32, Device::cuda);
  const ops::CrossEntropyResult r = ops::lm_head_cross_entropy(on_gpu(h, {M, d}, dtype), on_gpu(w, {V, d}, dtype),
                                                               on_gpu(targets, {M}, DType::i32), true, &dweight);
  EXPECT_EQ(r.loss.count(), ref.loss.count());
  EXPECT_NEAR(r.loss.mean(), ref.loss.mean(), 1e-5 * std::abs(ref.loss.mean()));
  EXPECT_LT(error_vs(r.dhidden, ref.dhidden.to_double_vector()), tolerance);
  EXPECT_LT(error_vs(dweight, ref_dw.to_double_vector()), tolerance);
  EXPECT_EQ(r.predictions.to_double_vector(), ref.predictions.to_double_vector());
  return targets;
}

TEST(CudaCrossEntropy, LossGradientsAndPredictions) {
  SKIP_WITHOUT_GPU();
  const int M = 29, d = 19, V = 37;
  std::vector<double> targets = check_cross_entropy(M, d, V, DType::f32, 5, 1e-5, 61);
  targets[3] = V;
  Rng rng(63);
  const auto h = random_vector(rng, M * d, -1, 1), w = random_vector(rng, V * d, -1, 1);
  EXPECT_THROW(ops::lm_head_cross_entropy(on_gpu(h, {M, d}, DType::f32), on_gpu(w, {V, d}, DType::f32),
                                          on_gpu(targets, {M}, DType::i32), false, nullptr),
               Error);
}

// With every row ignored the loss, its count and the gradients are 0 (no division by the count).
TEST(CudaCrossEntropy, AllRowsIgnored) {
  SKIP_WITHOUT_GPU();
  const int M = 6, d = 8, V = 20;
  Rng rng(64);
  const auto h = random_vector(rng, M * d, -1, 1), w = random_vector(rng, V * d, -1, 1);
  Tensor dweight = Tensor::zeros({V, d}, DType::f32, Device::cuda);
  const ops::CrossEntropyResult r =
      ops::lm_head_cross_entropy(on_gpu(h, {M, d}, DType::f32), on_gpu(w, {V, d}, DType::f32),
                                 on_gpu(std::vector<double>(M, -1.0), {M}, DType::i32), true, &dweight);
  EXPECT_EQ(r.loss.count(), 0);
  EXPECT_EQ(r.loss.mean(), 0.0);
  for (double g : r.dhidden.to_double_vector()) ASSERT_EQ(g, 0.0);
  for (double g : dweight.to_double_vector()) ASSERT_EQ(g, 0.0);
}

// bf16 products (the gradient is written in bf16 by the softmax kernel) over rows wider than a block,
// against the float64 reference on the same bf16-rounded inputs.
TEST(CudaCrossEntropy, Bf16ProductsOverWideRows) {
  SKIP_WITHOUT_GPU();
  check_cross_entropy(21, 32, 1000, DType::bf16, 4, 1e-2, 62);
}

// Several blocks of logits (5 rows each) and, for bf16 products, several groups of gathered
// gradient rows (12 each: blocks of 5, 5 and 2) before each dW product; the last group partial.
TEST(CudaCrossEntropy, SeveralBlocksAndGradientGroups) {
  SKIP_WITHOUT_GPU();
  const int M = 29, d = 19, V = 37;
  struct SmallBlocks {  // the defaults again after the test, also when a check throws
    SmallBlocks() { ops::cuda::set_lm_head_block_bytes(5 * V * 4, 12 * V * 2); }
    ~SmallBlocks() { ops::cuda::set_lm_head_block_bytes(0, 0); }
  } small_blocks;
  check_cross_entropy(M, d, V, DType::bf16, 4, 1e-2, 68);
  check_cross_entropy(M, d, V, DType::f32, 4, 1e-5, 69);
}

// Vocabularies past what one block's shared memory stages (≈ 58k float logits on an H100): the
// rest of each row is read from global memory again, in 16-byte packs (V % 4 == 0, bf16 gradient
// and f32 in place) and one logit at a time.
TEST(CudaCrossEntropy, RowsLongerThanSharedMemory) {
  SKIP_WITHOUT_GPU();
  check_cross_entropy(5, 8, 60000, DType::bf16, 3, 1e-2, 65);
  check_cross_entropy(4, 8, 60004, DType::f32, 3, 1e-5, 66);
  check_cross_entropy(4, 8, 60001, DType::f32, 3, 1e-5, 67);
}

// The multi-tensor optimiser updates and gradient norm on the GPU against the CPU ops on the same
// inputs (both float32 element math; sqrt and division may round differently, hence a tolerance):
// many parameters of odd sizes, some larger than a work chunk of the CUDA kernels, some with weight
// decay and some with a bf16 compute copy, some (on the GPU) one element into their buffers, so that
// the kernels take them one element at a time instead of in packs of four; clipping off, not reached
// and reached.
struct OptimizerCase {
  std::vector<Tensor> host[4];  // param, grad, first and second moment, one per parameter
  std::vector<ops::ParameterSlot> cpu, gpu;
};

OptimizerCase optimizer_case(Rng& rng, bool second_moment) {
  const std::vector<int64_t> sizes = {1, 3, 100003, 7, 32768, 32769, 65537, 5, 257, 1536, 13, 2};
  OptimizerCase c;
  for (size_t i = 0; i < sizes.size() * 3; ++i) {  // 36 parameters
    const int64_t n = sizes[i % sizes.size()];
    const double ranges[4][2] = {{-1, 1}, {-0.5, 0.5}, {-0.1, 0.1}, {0, 0.01}};
    for (int k = 0; k < 4; ++k)
      c.host[k].push_back(Tensor::from_vector(random_vector(rng, n, ranges[k][0], ranges[k][1]), {n}, DType::f32));
    const bool decays = i % 2 == 0, has_compute = i % 3 != 1;
    const Tensor second = second_moment ? c.host[3].back() : Tensor();
    c.cpu.push_back({c.host[0].back(), c.host[1].back(), c.host[2].back(), second,
                     has_compute ? Tensor::zeros({n}, DType::bf16) : Tensor(), decays});
    const bool unaligned = i % 4 == 3;
    auto on_gpu = [&](const Tensor& t) {
      if (!unaligned) return t.to(Device::cuda);
      Tensor buffer = Tensor::zeros({n + 1}, t.dtype(), Device::cuda);
      Tensor at_one = buffer.slice(1, n + 1);
      at_one.copy_from(t);
      return at_one;
    };
    c.gpu.push_back({on_gpu(c.host[0].back()), on_gpu(c.host[1].back()), on_gpu(c.host[2].back()),
                     second_moment ? on_gpu(second) : Tensor(),
                     has_compute ? on_gpu(Tensor::zeros({n}, DType::bf16)) : Tensor(), decays});
  }
  return c;
}

void expect_same_parameters(const OptimizerCase& c, const std::string& where) {
  for (size_t i = 0; i < c.cpu.size(); ++i) {
    const ops::ParameterSlot &a = c.cpu[i], &b = c.gpu[i];
    EXPECT_LT(relative_error(b.param.to(Device::cpu), a.param), 1e-6) << where << " parameter " << i;
    EXPECT_LT(relative_error(b.exp_avg.to(Device::cpu), a.exp_avg), 1e-6) << where << " parameter " << i;
    if (a.exp_avg_sq.defined()) {
      EXPECT_LT(relative_error(b.exp_avg_sq.to(Device::cpu), a.exp_avg_sq), 1e-6) << where << " parameter " << i;
    }
    if (a.compute.defined()) {  // the GPU's own update rounded to bf16, exactly
      EXPECT_EQ(b.compute.to_double_vector(), b.param.to(Device::cpu).to(DType::bf16).to_double_vector())
          << where << " parameter " << i;
    }
  }
}

TEST(CudaOptimizerUpdate, AdamWAndNormOverManyParametersMatchCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(17);
  OptimizerCase c = optimizer_case(rng, true);
  const ops::ParameterTable cpu(c.cpu), gpu(c.gpu);
  double expected = 0;
  for (const Tensor& g : c.host[1])
    for (double x : g.to_double_vector()) expected += x * x;
  expected = std::sqrt(expected);
  const ops::AdamWScalars s{0.999f, 0.1f, 0.95f, 0.05f, 1e-3f / 0.19f, 0.3f, 1e-8f};
  for (double max_norm : {0.0, 2 * expected, 0.25 * expected}) {
    const ops::GradientNorm a = ops::gradient_norm(cpu, max_norm), b = ops::gradient_norm(gpu, max_norm);
    const double norm = b.norm.to(Device::cpu).data<double>()[0];
    EXPECT_NEAR(norm, expected, 1e-12 * expected);
    EXPECT_FLOAT_EQ(b.scale.to(Device::cpu).item(0), a.scale.item(0)) << max_norm;
    // Repeatable: the same norm again, bit for bit.
    EXPECT_EQ(ops::gradient_norm(gpu, max_norm).norm.to(Device::cpu).data<double>()[0], norm);
    ops::adamw_update_(cpu, s, a.scale);
    ops::adamw_update_(gpu, s, b.scale);
    expect_same_parameters(c, "AdamW, max_norm " + std::to_string(max_norm));
  }
  // A gradient that is not finite: the scale is NaN and nothing changes.
  Tensor poisoned = c.host[1][5].clone();
  poisoned.data<float>()[7] = NAN;
  c.gpu[5].grad.copy_from(poisoned);
  const std::vector<double> before = c.gpu[0].param.to(Device::cpu).to_double_vector();
  const ops::GradientNorm nan_norm = ops::gradient_norm(gpu, 1.0);
  EXPECT_TRUE(std::isnan(nan_norm.scale.to(Device::cpu).item(0)));
  ops::adamw_update_(gpu, s, nan_norm.scale);
  EXPECT_EQ(c.gpu[0].param.to(Device::cpu).to_double_vector(), before);
}

TEST(CudaOptimizerUpdate, SgdOverManyParametersMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(18);
  OptimizerCase c = optimizer_case(rng, false);
  const ops::ParameterTable cpu(c.cpu), gpu(c.gpu);
  for (bool first : {true, false}) {
    const ops::SgdScalars sgd{0.1f, 0.01f, 0.9f, first};
    const ops::GradientNorm a = ops::gradient_norm(cpu, 1.0), b = ops::gradient_norm(gpu, 1.0);
    ops::sgd_update_(cpu, sgd, a.scale);
    ops::sgd_update_(gpu, sgd, b.scale);
    expect_same_parameters(c, first ? "SGD, first step" : "SGD");
  }
}
}  // namespace
}  // namespace mamba

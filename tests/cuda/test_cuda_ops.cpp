// GPU conv1d, add+norm, embedding, linear and LM-head cross-entropy against float64 loops of the
// math in their headers, on random odd sizes, every output and every gradient.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test_util.h"
#include "ops/causal_conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/linear.h"
#include "ops/norm.h"

namespace mamba {
namespace {
using namespace cuda_test;

TEST(CudaCausalConv1d, ForwardBackwardStep) {
  SKIP_WITHOUT_GPU();
  const int batch = 3, L = 37, C = 45, K = 4, H = K - 1;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Rng rng(21);
    const auto x = rounded(random_vector(rng, int64_t(batch) * L * C, -1, 1), dtype);
    const auto w = random_vector(rng, C * K, -0.5, 0.5), bias = random_vector(rng, C, -0.5, 0.5);
    const auto init = random_vector(rng, int64_t(batch) * C * H, -1, 1);
    const auto dout = rounded(random_vector(rng, int64_t(batch) * L * C, -1, 1), dtype);
    const std::vector<int> lens = {L, 2, 30};
    auto input = [&](int b, int t, int c) {
      if (t >= 0) return x[(size_t(b) * L + t) * C + c];
      return t + H >= 0 ? init[(size_t(b) * C + c) * H + t + H] : 0.0;
    };
    std::vector<double> out(x.size(), 0), fin(init.size()), dx(x.size(), 0), dw(w.size(), 0), db(C, 0),
        dinit(init.size(), 0);
    for (int b = 0; b < batch; ++b)
      for (int c = 0; c < C; ++c) {
        for (int j = 0; j < H; ++j) fin[(size_t(b) * C + c) * H + j] = input(b, lens[b] - H + j, c);
        for (int t = 0; t < lens[b]; ++t) {
          double pre = bias[c];
          for (int k = 0; k < K; ++k) pre += w[c * K + k] * input(b, t - K + 1 + k, c);
          const double s = sigmoid(pre);
          out[(size_t(b) * L + t) * C + c] = pre * s;
          const double g = dout[(size_t(b) * L + t) * C + c] * s * (1 + pre * (1 - s));
          db[c] += g;
          for (int k = 0; k < K; ++k) {
            const int src = t - K + 1 + k;
            dw[c * K + k] += g * input(b, src, c);
            if (src >= 0)
              dx[(size_t(b) * L + src) * C + c] += g * w[c * K + k];
            else if (src + H >= 0)
              dinit[(size_t(b) * C + c) * H + src + H] += g * w[c * K + k];
          }
        }
      }
    ops::ConvInputs in;
    in.x = on_gpu(x, {batch, L, C}, dtype);
    in.weight = on_gpu(w, {C, K}, DType::f32);
    in.bias = on_gpu(bias, {C}, DType::f32);
    in.initial_state = on_gpu(init, {batch, C, H}, DType::f32);
    in.lengths = on_gpu({double(lens[0]), double(lens[1]), double(lens[2])}, {batch}, DType::i32);
    const double tol = tolerance(dtype);
    const ops::ConvOutputs o = ops::cuda::causal_conv1d_forward(in);
    EXPECT_LT(error_vs(o.out, out), tol) << dtype_name(dtype);
    EXPECT_LT(error_vs(o.final_state, fin), 1e-6) << dtype_name(dtype);
    const ops::ConvGrads g = ops::cuda::causal_conv1d_backward(in, on_gpu(dout, {batch, L, C}, dtype));
    EXPECT_LT(error_vs(g.dx, dx), tol);
    EXPECT_LT(error_vs(g.dweight, dw), tol);
    EXPECT_LT(error_vs(g.dbias, db), tol);
    EXPECT_LT(error_vs(g.dinitial_state, dinit), tol);

    // Steps from the initial state reproduce the first positions of sequence 0.
    Tensor state = in.initial_state.clone();
    ops::ConvInputs step = in;
    for (int t = 0; t < 3; ++t) {
      std::vector<double> xt, ref;
      for (int b = 0; b < batch; ++b)
        for (int c = 0; c < C; ++c) xt.push_back(x[(size_t(b) * L + t) * C + c]);
      step.x = on_gpu(xt, {batch, C}, dtype);
      const Tensor y = ops::cuda::causal_conv1d_step(step, state);
      const std::vector<double> got = y.to_double_vector();
      for (int c = 0; c < C; ++c)
        EXPECT_NEAR(got[c], out[size_t(t) * C + c], dtype == DType::f32 ? 1e-5 : 2e-2) << "step " << t;
    }
  }
}

void check_norm(ops::NormKind kind, DType dtype, bool with_residual) {
  const int M = 23, d = 77;
  Rng rng(31 + int(kind));
  const auto x = rounded(random_vector(rng, M * d, -2, 2), dtype);
  // 16-bit activations come with a 16-bit weight, as in a bf16 model.
  const auto res = random_vector(rng, M * d, -1, 1), w = rounded(random_vector(rng, d, 0.5, 1.5), dtype);
  const auto bias = random_vector(rng, d, -0.5, 0.5), dout = rounded(random_vector(rng, M * d, -1, 1), dtype);
  const auto dres = random_vector(rng, M * d, -1, 1);
  const bool layer = kind == ops::NormKind::layer;
  std::vector<double> out(M * d), s(M * d), ds(M * d), dw(d, 0), db(d, 0);
  for (int i = 0; i < M; ++i) {
    double mean = 0, var = 0;
    for (int j = 0; j < d; ++j) s[i * d + j] = x[i * d + j] + (with_residual ? res[i * d + j] : 0.0);
    if (layer) {
      for (int j = 0; j < d; ++j) mean += s[i * d + j] / d;
    }
    for (int j = 0; j < d; ++j) var += (s[i * d + j] - mean) * (s[i * d + j] - mean) / d;
    const double rstd = 1 / std::sqrt(var + 1e-5);
    double mean_g = 0, mean_gx = 0;
    for (int j = 0; j < d; ++j) {
      const double xhat = (s[i * d + j] - mean) * rstd, g = dout[i * d + j] * w[j];
      out[i * d + j] = xhat * w[j] + (layer ? bias[j] : 0.0);
      mean_g += g / d;
      mean_gx += g * xhat / d;
      dw[j] += dout[i * d + j] * xhat;
      db[j] += dout[i * d + j];
    }
    for (int j = 0; j < d; ++j) {
      const double xhat = (s[i * d + j] - mean) * rstd, g = dout[i * d + j] * w[j];
      ds[i * d + j] = rstd * (g - (layer ? mean_g : 0.0) - xhat * mean_gx) + dres[i * d + j];
    }
  }
  ops::NormInputs in;
  in.x = on_gpu(x, {M, d}, dtype);
  if (with_residual) in.residual = on_gpu(res, {M, d}, DType::f32);
  in.weight = on_gpu(w, {d}, dtype);
  in.kind = kind;
  if (layer) in.bias = on_gpu(bias, {d}, DType::f32);
  const double tol = tolerance(dtype);
  const ops::NormOutputs o = ops::cuda::add_norm_forward(in);
  EXPECT_LT(error_vs(o.out, out), tol);
  EXPECT_LT(error_vs(o.residual_out, s), 1e-6);
  const ops::NormGrads g =
      ops::cuda::add_norm_backward(in, o, on_gpu(dout, {M, d}, dtype), on_gpu(dres, {M, d}, DType::f32));
  EXPECT_LT(error_vs(g.ds, ds), tol);
  EXPECT_LT(error_vs(g.dweight, dw), tol);
  if (layer) {
    EXPECT_LT(error_vs(g.dbias, db), tol);
  }
}

TEST(CudaAddNorm, RmsAndLayerNorm) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::f32, DType::bf16})
    for (bool residual : {false, true}) {
      check_norm(ops::NormKind::rms, dtype, residual);
      check_norm(ops::NormKind::layer, dtype, residual);
    }
}

TEST(CudaEmbedding, LookupGradientAndBadIds) {
  SKIP_WITHOUT_GPU();
  const int V = 29, d = 13, M = 41;
  Rng rng(41);
  const auto w = random_vector(rng, V * d, -1, 1), dout = random_vector(rng, M * d, -1, 1);
  std::vector<double> ids(M), out(M * d), dw(V * d, 0);
  for (int i = 0; i < M; ++i) {
    ids[i] = double(rng.below(V));
    for (int j = 0; j < d; ++j) {
      out[i * d + j] = w[int(ids[i]) * d + j];
      dw[int(ids[i]) * d + j] += dout[i * d + j];
    }
  }
  const Tensor gids = on_gpu(ids, {M}, DType::i64);
  EXPECT_LT(error_vs(ops::cuda::embedding_forward(on_gpu(w, {V, d}, DType::f32), gids), out), 1e-7);
  Tensor dweight = Tensor::zeros({V, d}, DType::f32, Device::cuda);
  ops::cuda::embedding_backward(on_gpu(ids, {M}, DType::i32), on_gpu(dout, {M, d}, DType::f32), dweight);
  EXPECT_LT(error_vs(dweight, dw), 1e-6);
  ids[17] = V;
  EXPECT_THROW(ops::cuda::embedding_forward(on_gpu(w, {V, d}, DType::f32), on_gpu(ids, {M}, DType::i32)), Error);
}

TEST(CudaLinear, ForwardBackward) {
  SKIP_WITHOUT_GPU();
  const int M = 33, K = 70, N = 21;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Rng rng(51);
    const auto x = rounded(random_vector(rng, M * K, -1, 1), dtype),
               w = rounded(random_vector(rng, N * K, -1, 1), dtype);
    const auto b = random_vector(rng, N, -1, 1), dy = rounded(random_vector(rng, M * N, -1, 1), dtype);
    std::vector<double> y(M * N), dx(M * K, 0), dw(N * K), db(N, 0);
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double acc = b[j];
        for (int k = 0; k < K; ++k) acc += x[i * K + k] * w[j * K + k];
        y[i * N + j] = acc;
        db[j] += dy[i * N + j];
        for (int k = 0; k < K; ++k) dx[i * K + k] += dy[i * N + j] * w[j * K + k];
      }
    // dW accumulates onto what is there: start from ones.
    for (int j = 0; j < N; ++j)
      for (int k = 0; k < K; ++k) {
        double acc = 1;
        for (int i = 0; i < M; ++i) acc += dy[i * N + j] * x[i * K + k];
        dw[j * K + k] = acc;
      }
    const Tensor gx = on_gpu(x, {M, K}, dtype), gw = on_gpu(w, {N, K}, dtype);
    const double tol = tolerance(dtype);
    EXPECT_LT(error_vs(ops::cuda::linear_forward(gx, gw, on_gpu(b, {N}, DType::f32)), y), tol);
    Tensor dweight = on_gpu(std::vector<double>(N * K, 1.0), {N, K}, DType::f32);
    Tensor dbias = Tensor::zeros({N}, DType::f32, Device::cuda);
    const Tensor gdx = ops::cuda::linear_backward(gx, gw, on_gpu(dy, {M, N}, dtype), &dweight, &dbias);
    EXPECT_LT(error_vs(gdx, dx), tol);
    EXPECT_LT(error_vs(dweight, dw), tol);
    EXPECT_LT(error_vs(dbias, db), tol);
    // Decode shape (one row), no bias.
    std::vector<double> row(N);
    for (int j = 0; j < N; ++j) row[j] = y[j] - b[j];
    EXPECT_LT(error_vs(ops::cuda::linear_forward(gx.slice(0, 1), gw, Tensor()), row), tol);
  }
}

TEST(CudaCrossEntropy, LossGradientsAndPredictions) {
  SKIP_WITHOUT_GPU();
  const int M = 29, d = 19, V = 37;
  Rng rng(61);
  const auto h = random_vector(rng, M * d, -1, 1), w = random_vector(rng, V * d, -1, 1);
  std::vector<double> targets(M);
  for (int i = 0; i < M; ++i) targets[i] = i % 5 == 3 ? -1.0 : double(rng.below(V));
  int count = 0;
  for (double t : targets) count += t >= 0;
  double loss = 0;
  std::vector<double> dh(M * d, 0), dw(V * d, 0), argmax(M);
  for (int i = 0; i < M; ++i) {
    std::vector<double> z(V);
    double mx = -1e300;
    for (int v = 0; v < V; ++v) {
      for (int k = 0; k < d; ++k) z[v] += h[i * d + k] * w[v * d + k];
      if (z[v] > mx) mx = z[v], argmax[i] = v;
    }
    if (targets[i] < 0) continue;
    double sum = 0;
    for (double zv : z) sum += std::exp(zv - mx);
    loss += std::log(sum) + mx - z[int(targets[i])];
    for (int v = 0; v < V; ++v) {
      const double g = (std::exp(z[v] - mx) / sum - (v == targets[i] ? 1 : 0)) / count;
      for (int k = 0; k < d; ++k) {
        dh[i * d + k] += g * w[v * d + k];
        dw[v * d + k] += g * h[i * d + k];
      }
    }
  }
  loss /= count;
  Tensor dweight = Tensor::zeros({V, d}, DType::f32, Device::cuda);
  const ops::CrossEntropyResult r = ops::cuda::lm_head_cross_entropy(
      on_gpu(h, {M, d}, DType::f32), on_gpu(w, {V, d}, DType::f32), on_gpu(targets, {M}, DType::i32), true, &dweight);
  EXPECT_EQ(r.count, count);
  EXPECT_NEAR(r.loss, loss, 1e-5 * std::abs(loss));
  EXPECT_LT(error_vs(r.dhidden, dh), 1e-5);
  EXPECT_LT(error_vs(dweight, dw), 1e-5);
  EXPECT_EQ(r.predictions.to_double_vector(), argmax);
  targets[3] = V;
  EXPECT_THROW(ops::cuda::lm_head_cross_entropy(on_gpu(h, {M, d}, DType::f32), on_gpu(w, {V, d}, DType::f32),
                                                on_gpu(targets, {M}, DType::i32), false, nullptr),
               Error);
}

}  // namespace
}  // namespace mamba

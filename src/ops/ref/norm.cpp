#include "ops/norm.h"

#include <cmath>
#include <vector>

namespace mamba::ops::ref {

namespace {

// Row statistics of s = x + residual, in double.
struct RowStats {
  std::vector<double> s, mean, rstd;
};

RowStats row_stats(const NormInputs& in, int64_t M, int64_t d) {
  RowStats st;
  st.s = in.x.to_double_vector();
  if (in.residual.defined()) {
    std::vector<double> res = in.residual.to_double_vector();
    for (size_t i = 0; i < st.s.size(); ++i) st.s[i] += res[i];
  }
  st.mean.assign(size_t(M), 0.0);
  st.rstd.assign(size_t(M), 0.0);
  for (int64_t r = 0; r < M; ++r) {
    const double* s = st.s.data() + r * d;
    double mu = 0;
    if (in.kind == NormKind::layer) {
      for (int64_t i = 0; i < d; ++i) mu += s[i];
      mu /= double(d);
    }
    double second_moment = 0;
    for (int64_t i = 0; i < d; ++i) second_moment += (s[i] - mu) * (s[i] - mu);
    st.mean[size_t(r)] = mu;
    st.rstd[size_t(r)] = 1.0 / std::sqrt(second_moment / double(d) + double(in.eps));
  }
  return st;
}

}  // namespace

NormOutputs add_norm_forward(const NormInputs& in) {
  check_norm_inputs(in);
  const int64_t d = in.x.size(-1), M = d == 0 ? 0 : in.x.numel() / d;
  RowStats st = row_stats(in, M, d);
  std::vector<double> w = in.weight.to_double_vector();
  std::vector<double> b = in.bias.defined() ? in.bias.to_double_vector() : std::vector<double>(size_t(d), 0.0);
  std::vector<double> out(st.s.size());
  for (int64_t r = 0; r < M; ++r)
    for (int64_t i = 0; i < d; ++i) {
      size_t k = size_t(r * d + i);
      out[k] = (st.s[k] - st.mean[size_t(r)]) * st.rstd[size_t(r)] * w[size_t(i)] + b[size_t(i)];
    }
  NormOutputs o;
  o.out = Tensor::from_vector(out, in.x.shape(), DType::f64);
  o.residual_out = Tensor::from_vector(st.s, in.x.shape(), DType::f64);
  o.rstd = Tensor::from_vector(st.rstd, {M}, DType::f64);
  if (in.kind == NormKind::layer) o.mean = Tensor::from_vector(st.mean, {M}, DType::f64);
  return o;
}

// Recomputes the statistics from `in` (in double) rather than trusting `saved`.
NormGrads add_norm_backward(const NormInputs& in, const NormOutputs&, const Tensor& dout, const Tensor& dresidual_out) {
  check_norm_inputs(in);
  const int64_t d = in.x.size(-1), M = d == 0 ? 0 : in.x.numel() / d;
  RowStats st = row_stats(in, M, d);
  std::vector<double> w = in.weight.to_double_vector(), g = dout.to_double_vector();
  std::vector<double> ds =
      dresidual_out.defined() ? dresidual_out.to_double_vector() : std::vector<double>(st.s.size(), 0.0);
  std::vector<double> dw(size_t(d), 0.0), db(size_t(d), 0.0);
  const bool layer = in.kind == NormKind::layer;
  for (int64_t r = 0; r < M; ++r) {
    const double inv = st.rstd[size_t(r)], mu = st.mean[size_t(r)];
    const double* s = st.s.data() + r * d;
    const double* gy = g.data() + r * d;
    double gw_mean = 0, gwx_mean = 0;
    for (int64_t i = 0; i < d; ++i) {
      gw_mean += gy[i] * w[size_t(i)];
      gwx_mean += gy[i] * w[size_t(i)] * (s[i] - mu) * inv;
    }
    gw_mean = layer ? gw_mean / double(d) : 0.0;
    gwx_mean /= double(d);
    for (int64_t i = 0; i < d; ++i) {
      double xhat = (s[i] - mu) * inv;
      ds[size_t(r * d + i)] += inv * (gy[i] * w[size_t(i)] - gw_mean - xhat * gwx_mean);
      dw[size_t(i)] += gy[i] * xhat;
      db[size_t(i)] += gy[i];
    }
  }
  NormGrads grads;
  grads.ds = Tensor::from_vector(ds, in.x.shape(), DType::f64);
  grads.dx = grads.ds;
  grads.dweight = Tensor::from_vector(dw, {d}, DType::f64);
  if (in.bias.defined()) grads.dbias = Tensor::from_vector(db, {d}, DType::f64);
  return grads;
}

}  // namespace mamba::ops::ref

#include "ops/linear.h"

namespace mamba::ops::ref {

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear_inputs(x, weight, bias);
  int64_t N = weight.size(0), K = weight.size(1), M = K == 0 ? 0 : x.numel() / K;
  std::vector<double> xv = x.to_double_vector(), w = weight.to_double_vector();
  std::vector<double> b = bias.defined() ? bias.to_double_vector() : std::vector<double>(size_t(N), 0.0);
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape, DType::f64);
  double* yp = y.data<double>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double sum = b[size_t(n)];
      for (int64_t k = 0; k < K; ++k) sum += xv[size_t(m * K + k)] * w[size_t(n * K + k)];
      yp[m * N + n] = sum;
    }
  return y;
}

Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias) {
  check_linear_backward_inputs(x, weight, dy, dweight, dbias);
  int64_t N = weight.size(0), K = weight.size(1), M = K == 0 ? 0 : x.numel() / K;
  std::vector<double> xv = x.to_double_vector(), w = weight.to_double_vector(), g = dy.to_double_vector();
  Tensor dx = Tensor::zeros(x.shape(), DType::f64);
  double* dxp = dx.data<double>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) dxp[m * K + k] += g[size_t(m * N + n)] * w[size_t(n * K + k)];
  if (dweight) {
    std::vector<double> dw = dweight->to_double_vector();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) dw[size_t(n * K + k)] += g[size_t(m * N + n)] * xv[size_t(m * K + k)];
    dweight->copy_from(Tensor::from_vector(dw, dweight->shape(), DType::f64));
  }
  if (dbias) {
    std::vector<double> db = dbias->to_double_vector();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) db[size_t(n)] += g[size_t(m * N + n)];
    dbias->copy_from(Tensor::from_vector(db, dbias->shape(), DType::f64));
  }
  return dx;
}

}  // namespace mamba::ops::ref

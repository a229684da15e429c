#include "ops/linear.h"

#include "ops/cpu/gemm.h"
#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear_inputs(x, weight, bias);
  check_f32_activation(x, "linear input x");
  check_float_weight(weight, "linear weight");
  int64_t N = weight.size(0), K = weight.size(1), M = K == 0 ? 0 : x.numel() / K;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape, DType::f32);
  float* yp = y.data<float>();
  if (K == 0) {
    y.zero_();
  } else {
    gemm_x_wt(x.data<float>(), M, weight, yp, N);
  }
  if (bias.defined()) {
    check_float_weight(bias, "linear bias");
    Tensor b = parameter_as_f32(bias);
    const float* bp = b.data<float>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) yp[m * N + n] += bp[n];
  }
  return y;
}

Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias) {
  check_linear_backward_inputs(x, weight, dy, dweight, dbias);
  check_f32_activation(x, "linear input x");
  check_f32_activation(dy, "linear output gradient dy");
  check_float_weight(weight, "linear weight");
  int64_t N = weight.size(0), K = weight.size(1), M = K == 0 ? 0 : x.numel() / K;
  Tensor dx = Tensor::empty(x.shape(), DType::f32);
  const float* dyp = dy.data<float>();
  gemm_dy_w(dyp, M, N, weight, dx.data<float>());
  if (dweight) {
    check_dtype(*dweight, DType::f32, "linear weight gradient");
    gemm_accumulate_dyt_x(dyp, M, N, x.data<float>(), N, K, dweight->data<float>());
  }
  if (dbias) {
    check_dtype(*dbias, DType::f32, "linear bias gradient");
    add_column_sums(dyp, M, N, dbias->data<float>());
  }
  return dx;
}

}  // namespace mamba::ops::cpu

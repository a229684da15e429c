#include "ops/linear.h"

#include <algorithm>

#include "ops/cpu/gemm.h"
#include "ops/cpu/step_work.h"
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

std::optional<ProductWork> prepare_streaming_product(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                                     const std::vector<int64_t>& widths) {
  check_f32_activation(x, "linear input x");
  check_float_weight(weight, "linear weight");
  const int64_t K = weight.size(1), M = K == 0 ? 0 : x.numel() / K;
  if (K == 0 || !use_streaming_kernel(M, K, weight.dtype())) return std::nullopt;
  if (bias.defined()) check_float_weight(bias, "linear bias");
  ProductWork work{{}, {weight.size(0), stream_chunk_rows(weight), {}}};
  std::vector<int64_t> begins;
  std::vector<Tensor> piece_weights;
  int64_t begin = 0;
  for (int64_t width : widths) {
    Shape shape = x.shape();
    shape.back() = width;
    work.pieces.push_back(Tensor::empty(shape, DType::f32));
    piece_weights.push_back(weight.slice(begin, begin + width));
    begins.push_back(begin);
    begin += width;
  }
  // The lambda holds the tensors whose pointers it uses; x is the caller's until the work has run.
  work.rows.run = [x = x.data<float>(), M, piece_weights, b = parameter_as_f32(bias), pieces = work.pieces, begins,
                   widths](int64_t n0, int64_t n1) {
    // Rows [n0, n1) of W: the part of each piece they cover, written into that piece.
    for (size_t i = 0; i < pieces.size(); ++i) {
      const int64_t p0 = std::max(n0, begins[i]) - begins[i], p1 = std::min(n1, begins[i] + widths[i]) - begins[i];
      if (p0 >= p1) continue;
      float* y = pieces[i].data<float>();
      stream_x_wt_rows(x, M, piece_weights[i], p0, p1, y, widths[i]);
      if (b.defined()) {
        const float* piece_bias = b.data<float>() + begins[i];
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = p0; n < p1; ++n) y[m * widths[i] + n] += piece_bias[n];
      }
    }
  };
  return work;
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

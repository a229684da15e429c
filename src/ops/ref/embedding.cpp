#include "ops/embedding.h"

#include <vector>

namespace mamba::ops::ref {

Tensor embedding_forward(const Tensor& weight, const Tensor& ids) {
  check_embedding_inputs(weight, ids);
  const int64_t d = weight.size(1), M = ids.numel();
  std::vector<double> w = weight.to_double_vector(), ids_v = ids.to_double_vector(), out(size_t(M * d));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < d; ++k) out[size_t(i * d + k)] = w[size_t(int64_t(ids_v[size_t(i)]) * d + k)];
  Shape out_shape = ids.shape();
  out_shape.push_back(d);
  return Tensor::from_vector(out, out_shape, DType::f64);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight) {
  check_embedding_backward_inputs(ids, dout, dweight);
  const int64_t d = dweight.size(1), M = ids.numel();
  std::vector<double> dw = dweight.to_double_vector(), g = dout.to_double_vector(), ids_v = ids.to_double_vector();
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < d; ++k) dw[size_t(int64_t(ids_v[size_t(i)]) * d + k)] += g[size_t(i * d + k)];
  dweight.copy_from(Tensor::from_vector(dw, dweight.shape(), DType::f64));
}

}  // namespace mamba::ops::ref

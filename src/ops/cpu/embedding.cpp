#include "ops/embedding.h"

#include <algorithm>
#include <vector>

#include "core/threads.h"
#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

namespace {

std::vector<int64_t> ids_as_int64(const Tensor& ids) {
  std::vector<int64_t> out(size_t(ids.numel()));
  convert_elements(ids.raw(), ids.dtype(), out.data(), DType::i64, out.size());
  return out;
}

}  // namespace

Tensor embedding_forward(const Tensor& weight, const Tensor& ids) {
  check_embedding_inputs(weight, ids);
  check_float_weight(weight, "embedding weight");
  const int64_t d = weight.size(1);
  const std::vector<int64_t> id = ids_as_int64(ids);
  Shape out_shape = ids.shape();
  out_shape.push_back(d);
  Tensor out = Tensor::empty(out_shape, DType::f32);
  float* y = out.data<float>();
  const auto* w = static_cast<const char*>(weight.raw_rows());  // the LM head's padded rows, when tied
  const size_t row_bytes = size_t(weight.row_stride()) * dtype_size(weight.dtype());
  parallel_for(int64_t(id.size()), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) widen_to_f32(w + size_t(id[size_t(i)]) * row_bytes, weight.dtype(), y + i * d, d);
  });
  return out;
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight) {
  check_embedding_backward_inputs(ids, dout, dweight);
  check_f32_activation(dout, "embedding output gradient");
  check_dtype(dweight, DType::f32, "embedding weight gradient");
  const int64_t V = dweight.size(0), d = dweight.size(1);
  const std::vector<int64_t> id = ids_as_int64(ids);
  const float* g = dout.data<float>();
  float* dw = dweight.data<float>();
  // Each range owns a slice of the vocabulary and adds its rows' gradients in position order.
  parallel_for(V, [&](int64_t v0, int64_t v1, int) {
    for (size_t i = 0; i < id.size(); ++i) {
      if (id[i] < v0 || id[i] >= v1) continue;
      float* row = dw + id[i] * d;
      const float* src = g + int64_t(i) * d;
      for (int64_t k = 0; k < d; ++k) row[k] += src[k];
    }
  });
}

}  // namespace mamba::ops::cpu

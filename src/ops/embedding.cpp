#include "ops/embedding.h"

#include "ops/dispatch.h"

namespace mamba::ops {

void check_token_ids(const Tensor& ids, int64_t V) {
  MAMBA_CHECK(ids.defined(), "embedding ids: tensor is missing");
  MAMBA_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "embedding ids: expected dtype i32 or i64, got ",
              dtype_name(ids.dtype()));
  Tensor host = ids.device() == Device::cpu ? ids : ids.to(Device::cpu);
  const int64_t n = host.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = host.dtype() == DType::i32 ? host.data<int32_t>()[i] : host.data<int64_t>()[i];
    MAMBA_CHECK(id >= 0 && id < V, "embedding ids: token id ", id, " at position ", i,
                " is outside the vocabulary [0, ", V, ")");
  }
}

void check_embedding_inputs(const Tensor& weight, const Tensor& ids, bool ids_checked) {
  MAMBA_CHECK(weight.defined() && weight.ndim() == 2, "embedding weight: expected a 2-D tensor [V, d]",
              weight.defined() ? ", got shape " + shape_string(weight.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(dtype_is_float(weight.dtype()), "embedding weight: expected a float dtype, got ",
              dtype_name(weight.dtype()));
  MAMBA_CHECK(ids.defined(), "embedding ids: tensor is missing");
  if (!ids_checked) check_token_ids(ids, weight.size(0));
  check_device(ids, weight.device(), "embedding ids");
}

void check_embedding_backward_inputs(const Tensor& ids, const Tensor& dout, const Tensor& dweight, bool ids_checked) {
  MAMBA_CHECK(dweight.defined() && dweight.ndim() == 2, "embedding weight gradient: expected a 2-D tensor [V, d]",
              dweight.defined() ? ", got shape " + shape_string(dweight.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(ids.defined(), "embedding ids: tensor is missing");
  if (!ids_checked) check_token_ids(ids, dweight.size(0));
  Shape expected = ids.shape();
  expected.push_back(dweight.size(1));
  check_shape(dout, expected, "embedding output gradient");
  check_device(dout, ids.device(), "embedding output gradient");
  check_device(dweight, ids.device(), "embedding weight gradient");
}

Tensor embedding_forward(const Tensor& weight, const Tensor& ids, bool ids_checked) {
  check_embedding_inputs(weight, ids, ids_checked);
  MAMBA_OPS_DISPATCH(weight.device(), "embedding_forward", embedding_forward(weight, ids));
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight, bool ids_checked) {
  check_embedding_backward_inputs(ids, dout, dweight, ids_checked);
  MAMBA_OPS_DISPATCH(ids.device(), "embedding_backward", embedding_backward(ids, dout, dweight));
}

}  // namespace mamba::ops

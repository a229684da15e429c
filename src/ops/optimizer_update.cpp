#include "ops/optimizer_update.h"

#include "ops/dispatch.h"

namespace mamba::ops {

namespace {
void check_like(const Tensor& t, const Tensor& param, DType dtype, const char* name) {
  if (!t.defined()) return;
  check_dtype(t, dtype, name);
  check_shape(t, param.shape(), name);
  check_device(t, param.device(), name);
}

void check_scale(const ParameterTable& table, const Tensor& scale, const char* name) {
  MAMBA_CHECK(scale.defined(), name, ": the gradient scale is missing");
  check_dtype(scale, DType::f32, name);
  check_shape(scale, {1}, name);
  check_device(scale, table.device(), name);
}
}  // namespace

ParameterTable::ParameterTable(std::vector<ParameterSlot> slots) : slots_(std::move(slots)) {
  if (!slots_.empty()) device_ = slots_[0].param.device();
  for (const ParameterSlot& s : slots_) {
    MAMBA_CHECK(s.param.defined() && s.grad.defined(), "parameter table: a parameter or its gradient is missing");
    check_dtype(s.param, DType::f32, "parameter table parameter");
    check_device(s.param, device_, "parameter table parameter");
    check_like(s.grad, s.param, DType::f32, "parameter table gradient");
    check_like(s.exp_avg, s.param, DType::f32, "parameter table exp_avg");
    check_like(s.exp_avg_sq, s.param, DType::f32, "parameter table exp_avg_sq");
    check_like(s.compute, s.param, DType::bf16, "parameter table compute copy");
  }
#ifdef MAMBACPP_CUDA
  if (device_ == Device::cuda) backend_data_ = cuda::build_parameter_table(slots_);
#else
  if (device_ == Device::cuda) fail_without_cuda("parameter table");
#endif
}

GradientNorm gradient_norm(const ParameterTable& table, double max_norm) {
  MAMBA_OPS_DISPATCH(table.device(), "gradient_norm", gradient_norm(table, max_norm));
}

void adamw_update_(const ParameterTable& table, const AdamWScalars& s, const Tensor& scale) {
  check_scale(table, scale, "adamw_update_");
  for (const ParameterSlot& slot : table.slots())
    MAMBA_CHECK(slot.exp_avg.defined() && slot.exp_avg_sq.defined(), "adamw_update_: a moment tensor is missing");
  MAMBA_OPS_DISPATCH(table.device(), "adamw_update_", adamw_update_(table, s, scale));
}

void sgd_update_(const ParameterTable& table, const SgdScalars& s, const Tensor& scale) {
  check_scale(table, scale, "sgd_update_");
  MAMBA_OPS_DISPATCH(table.device(), "sgd_update_", sgd_update_(table, s, scale));
}

}  // namespace mamba::ops

#include "ops/optimizer_update.h"

#include "ops/dispatch.h"

namespace mamba::ops {

namespace {
void check_like(const Tensor& t, const Tensor& param, const char* name) {
  MAMBA_CHECK(t.defined(), name, ": tensor is missing");
  check_dtype(t, DType::f32, name);
  check_shape(t, param.shape(), name);
  check_device(t, param.device(), name);
}
}  // namespace

void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWScalars& s) {
  MAMBA_CHECK(param.defined(), "adamw_update_: parameter is missing");
  check_dtype(param, DType::f32, "adamw_update_ parameter");
  check_like(grad, param, "adamw_update_ gradient");
  check_like(exp_avg, param, "adamw_update_ exp_avg");
  check_like(exp_avg_sq, param, "adamw_update_ exp_avg_sq");
  MAMBA_OPS_DISPATCH(param.device(), "adamw_update_", adamw_update_(param, grad, exp_avg, exp_avg_sq, s));
}

void sgd_update_(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdScalars& s) {
  MAMBA_CHECK(param.defined(), "sgd_update_: parameter is missing");
  check_dtype(param, DType::f32, "sgd_update_ parameter");
  check_like(grad, param, "sgd_update_ gradient");
  if (momentum_buffer.defined()) check_like(momentum_buffer, param, "sgd_update_ momentum buffer");
  MAMBA_OPS_DISPATCH(param.device(), "sgd_update_", sgd_update_(param, grad, momentum_buffer, s));
}

void accumulate_sum_of_squares(const Tensor& x, Tensor& total) {
  MAMBA_CHECK(x.defined() && total.defined(), "accumulate_sum_of_squares: tensor is missing");
  check_dtype(x, DType::f32, "accumulate_sum_of_squares input");
  check_dtype(total, DType::f64, "accumulate_sum_of_squares total");
  check_shape(total, {1}, "accumulate_sum_of_squares total");
  check_device(total, x.device(), "accumulate_sum_of_squares total");
  MAMBA_OPS_DISPATCH(x.device(), "accumulate_sum_of_squares", accumulate_sum_of_squares(x, total));
}

}  // namespace mamba::ops

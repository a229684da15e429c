#include "ops/norm.h"

#include "ops/dispatch.h"

namespace mamba::ops {

void check_norm_inputs(const NormInputs& in) {
  MAMBA_CHECK(in.x.defined() && in.x.ndim() >= 1, "norm input x: expected a tensor [M, d]");
  MAMBA_CHECK(dtype_is_float(in.x.dtype()), "norm input x: expected a float dtype, got ", dtype_name(in.x.dtype()));
  int64_t d = in.x.size(-1);
  if (in.residual.defined()) {
    check_shape(in.residual, in.x.shape(), "norm residual");
    MAMBA_CHECK(dtype_is_float(in.residual.dtype()), "norm residual: expected a float dtype, got ",
                dtype_name(in.residual.dtype()));
  }
  check_shape(in.weight, {d}, "norm weight");
  MAMBA_CHECK(dtype_is_float(in.weight.dtype()), "norm weight: expected a float dtype, got ",
              dtype_name(in.weight.dtype()));
  if (in.bias.defined()) {
    MAMBA_CHECK(in.kind == NormKind::layer, "norm bias: only LayerNorm takes a bias (RMSNorm was asked for)");
    check_shape(in.bias, {d}, "norm bias");
    MAMBA_CHECK(dtype_is_float(in.bias.dtype()), "norm bias: expected a float dtype, got ",
                dtype_name(in.bias.dtype()));
  }
  MAMBA_CHECK(in.eps >= 0, "norm eps: expected a non-negative value, got ", in.eps);
  for (auto [t, name] :
       {std::pair{&in.residual, "norm residual"}, {&in.weight, "norm weight"}, {&in.bias, "norm bias"}})
    check_device(*t, in.x.device(), name);
}

// The saved forward outputs and the incoming gradients must match the inputs.
static void check_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                                const Tensor& dresidual_out) {
  check_norm_inputs(in);
  check_shape(dout, in.x.shape(), "norm output gradient");
  check_device(dout, in.x.device(), "norm output gradient");
  if (dresidual_out.defined()) {
    check_shape(dresidual_out, in.x.shape(), "norm residual_out gradient");
    check_device(dresidual_out, in.x.device(), "norm residual_out gradient");
  }
  int64_t rows = in.x.numel() / std::max<int64_t>(1, in.x.size(-1));
  check_shape(saved.residual_out, in.x.shape(), "norm saved residual_out");
  check_shape(saved.rstd, {rows}, "norm saved rstd");
  if (in.kind == NormKind::layer) check_shape(saved.mean, {rows}, "norm saved mean");
}

NormOutputs add_norm_forward(const NormInputs& in) {
  check_norm_inputs(in);
  MAMBA_OPS_DISPATCH(in.x.device(), "add_norm_forward", add_norm_forward(in));
}

NormGrads add_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                            const Tensor& dresidual_out, Tensor* dweight_into, Tensor* dbias_into) {
  check_norm_backward(in, saved, dout, dresidual_out);
  check_gradient_into(dweight_into, in.weight, in.x.device(), "norm", "weight");
  check_gradient_into(dbias_into, in.bias, in.x.device(), "norm", "bias");
  MAMBA_OPS_DISPATCH(in.x.device(), "add_norm_backward",
                     add_norm_backward(in, saved, dout, dresidual_out, dweight_into, dbias_into));
}

}  // namespace mamba::ops

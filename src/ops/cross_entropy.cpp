#include "ops/cross_entropy.h"

#include "ops/dispatch.h"

namespace mamba::ops {

double LossTotals::mean() const { return mamba::on_host(values).item(0); }
int64_t LossTotals::count() const { return int64_t(mamba::on_host(values).item(1)); }
LossTotals LossTotals::on_host(double mean, int64_t count) {
  return {Tensor::from_vector({mean, double(count)}, {2}, DType::f64)};
}

void check_targets(const Tensor& targets, int64_t V) {
  check_dtype(targets, DType::i32, "cross-entropy targets");
  Tensor host = targets.device() == Device::cpu ? targets : targets.to(Device::cpu);
  const int32_t* t = host.data<int32_t>();
  for (int64_t i = 0; i < host.numel(); ++i)
    MAMBA_CHECK(t[i] >= -1 && t[i] < V, "cross-entropy targets: target ", t[i], " at row ", i,
                " is outside the vocabulary [0, ", V, ") (use -1 to ignore a row)");
}

void check_cross_entropy_inputs(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                const Tensor* dweight, bool targets_checked) {
  MAMBA_CHECK(hidden.defined() && hidden.ndim() == 2, "lm head hidden: expected a tensor [M, d]",
              hidden.defined() ? ", got shape " + shape_string(hidden.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(dtype_is_float(hidden.dtype()), "lm head hidden: expected a float dtype, got ",
              dtype_name(hidden.dtype()));
  const int64_t M = hidden.size(0), d = hidden.size(1);
  MAMBA_CHECK(weight.defined() && weight.ndim() == 2 && weight.size(1) == d, "lm head weight: expected shape [V, ", d,
              "]", weight.defined() ? ", got " + shape_string(weight.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(dtype_is_float(weight.dtype()), "lm head weight: expected a float dtype, got ",
              dtype_name(weight.dtype()));
  const int64_t V = weight.size(0);
  check_shape(targets, {M}, "cross-entropy targets");
  check_dtype(targets, DType::i32, "cross-entropy targets");
  check_device(weight, hidden.device(), "lm head weight");
  check_device(targets, hidden.device(), "cross-entropy targets");
  if (!targets_checked) check_targets(targets, V);
  if (dweight) {
    check_shape(*dweight, weight.shape(), "lm head weight gradient");
    check_device(*dweight, hidden.device(), "lm head weight gradient");
  }
}

CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight, bool targets_checked,
                                         bool overwrite_dweight) {
  check_cross_entropy_inputs(hidden, weight, targets, dweight, targets_checked);
  if (hidden.device() == Device::cuda) {
#ifdef MAMBACPP_CUDA
    return cuda::lm_head_cross_entropy(hidden, weight, targets, with_grad, dweight, overwrite_dweight);
#else
    fail_without_cuda("lm_head_cross_entropy");
#endif
  }
  if (overwrite_dweight && with_grad && dweight) dweight->zero_();  // the CPU kernel only accumulates
  return cpu::lm_head_cross_entropy(hidden, weight, targets, with_grad, dweight);
}

}  // namespace mamba::ops

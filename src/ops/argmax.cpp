#include "ops/argmax.h"

#include "ops/dispatch.h"

namespace mamba::ops {

void check_argmax_inputs(const Tensor& x, int64_t columns) {
  MAMBA_CHECK(x.defined() && x.ndim() == 2, "argmax_rows x: expected a tensor [M, V]",
              x.defined() ? ", got shape " + shape_string(x.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(dtype_is_float(x.dtype()), "argmax_rows x: expected a float dtype, got ", dtype_name(x.dtype()));
  MAMBA_CHECK(columns <= x.size(1), "argmax_rows: ", columns, " columns asked of rows of ", x.size(1));
}

Tensor argmax_rows(const Tensor& x, int64_t columns) {
  check_argmax_inputs(x, columns);
  MAMBA_OPS_DISPATCH(x.device(), "argmax_rows", argmax_rows(x, columns));
}

void argmax_rows_into(const Tensor& x, int64_t columns, const std::vector<Tensor>& into) {
  check_argmax_inputs(x, columns);
  MAMBA_CHECK(!into.empty() && into.size() <= 2, "argmax_rows_into: expected one or two outputs, got ", into.size());
  for (const Tensor& out : into) {
    MAMBA_CHECK(out.defined() && out.is_contiguous(), "argmax_rows_into: expected contiguous output tensors, got ",
                out.defined() ? "one with padded rows" : "a missing one");
    check_shape(out, {x.size(0)}, "argmax_rows_into output");
    check_dtype(out, DType::i32, "argmax_rows_into output");
    check_device(out, x.device(), "argmax_rows_into output");
  }
  MAMBA_OPS_DISPATCH(x.device(), "argmax_rows_into", argmax_rows_into(x, columns, into));
}

}  // namespace mamba::ops

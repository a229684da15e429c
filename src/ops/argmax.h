// Greedy choice over the rows of a matrix: for x [M, V] (f32 | bf16 | f64),
//   out[m] = the smallest j < columns with x[m, j] = max_{k < columns} x[m, k]      (i32 [M])
// over the first `columns` entries of each row (all V when columns < 0), e.g. logits of a padded
// vocabulary. NaN entries are never chosen (a row with no number gives 0).
//
// Used by greedy decoding: on CUDA the logits stay on the GPU and only M ids come back. Only
// comparisons are involved, so every backend returns exactly the reference's ids.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace mamba::ops {

void check_argmax_inputs(const Tensor& x, int64_t columns);
Tensor argmax_rows(const Tensor& x, int64_t columns = -1);
// The same ids written into `into` (one or two i32 [M] tensors on x's device) instead of a new
// tensor: greedy decoding on CUDA puts each step's ids into its row of the result and into the
// next step's input with one kernel, and no device copy runs between the steps.
void argmax_rows_into(const Tensor& x, int64_t columns, const std::vector<Tensor>& into);

namespace ref {
Tensor argmax_rows(const Tensor& x, int64_t columns = -1);
}  // namespace ref
namespace cpu {
Tensor argmax_rows(const Tensor& x, int64_t columns);
void argmax_rows_into(const Tensor& x, int64_t columns, const std::vector<Tensor>& into);
}  // namespace cpu
namespace cuda {
Tensor argmax_rows(const Tensor& x, int64_t columns);
void argmax_rows_into(const Tensor& x, int64_t columns, const std::vector<Tensor>& into);
}  // namespace cuda

}  // namespace mamba::ops

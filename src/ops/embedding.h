// Embedding lookup: out[i] = weight[ids[i]] for ids [M] (i32 or i64), weight [V, d].
// ids may have any shape ([batch, L]); out then has shape ids.shape + [d].
// An id outside [0, V) is an error naming the id, its position and V.
// Backward: dweight[ids[i]] += dout[i] (dweight f32 [V, d], accumulated; the CPU kernel sums
// each row's contributions in position order, so the result does not depend on threads).
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

// Validate shapes/dtypes/devices and every id; messages name the tensor (and the bad id).
void check_embedding_inputs(const Tensor& weight, const Tensor& ids);
void check_embedding_backward_inputs(const Tensor& ids, const Tensor& dout, const Tensor& dweight);

Tensor embedding_forward(const Tensor& weight, const Tensor& ids);  // [M, d] f32 (f64 for ref)
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight);

namespace ref {
Tensor embedding_forward(const Tensor& weight, const Tensor& ids);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight);
}  // namespace ref
namespace cpu {
Tensor embedding_forward(const Tensor& weight, const Tensor& ids);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight);
}  // namespace cpu
namespace cuda {
Tensor embedding_forward(const Tensor& weight, const Tensor& ids);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight);
}  // namespace cuda

}  // namespace mamba::ops

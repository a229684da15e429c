// Embedding lookup: out[i] = weight[ids[i]] for ids [M] (i32 or i64), weight [V, d].
// An id outside [0, V) is an error naming the id, its position and V.
// Backward: dweight[ids[i]] += dout[i] (dweight f32 [V, d], accumulated).
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

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

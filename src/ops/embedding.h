// Embedding lookup: out[i] = weight[ids[i]] for ids [M] (i32 or i64), weight [V, d].
// ids may have any shape ([batch, L]); out then has shape ids.shape + [d].
// An id outside [0, V) is an error naming the id, its position and V. The entry points check ids
// on the host (ids on the GPU are copied there); a caller that has checked them itself passes
// ids_checked = true, so the lookup queues no copy and no wait (a CUDA graph can record it).
// Backward: dweight[ids[i]] += dout[i] (dweight f32 [V, d], accumulated; the CPU kernel sums
// each row's contributions in position order, so the result does not depend on threads).
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

// Every id in [0, vocab), else an error naming the id and its position (ids on the GPU are copied
// to the host for it: callers that hold the ids on the host check them there, before uploading).
void check_token_ids(const Tensor& ids, int64_t vocab);
// Validate shapes/dtypes/devices and every id; messages name the tensor (and the bad id).
void check_embedding_inputs(const Tensor& weight, const Tensor& ids, bool ids_checked = false);
void check_embedding_backward_inputs(const Tensor& ids, const Tensor& dout, const Tensor& dweight,
                                     bool ids_checked = false);

Tensor embedding_forward(const Tensor& weight, const Tensor& ids, bool ids_checked = false);  // [M, d] f32
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight, bool ids_checked = false);

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

// LM head fused with softmax cross-entropy.
//
//   logitsᵢ = hᵢ · Wᵀ            (h [M, d] f32, W [V, d])
//   lossᵢ   = logsumexp(logitsᵢ) − logitsᵢ[targetᵢ]
//   loss    = Σᵢ lossᵢ / count   over rows whose target ≥ 0 (target −1: ignored row)
// The [M, V] logits exist only one block of rows at a time: each block's softmax is turned into
// its gradient (softmax − onehot)/count at once and multiplied back into dh and dW.
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

struct CrossEntropyResult {
  double loss = 0;        // mean over counted rows
  int64_t count = 0;      // rows with target ≥ 0
  Tensor dhidden;         // [M, d] f32 when gradients were asked for
  Tensor predictions;     // [M] i32 argmax of each row's logits
};

// targets [M] i32 (−1 = ignore). dweight (f32 [V, d]) accumulates when non-null;
// with_grad = false computes only the loss and predictions.
CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight);

namespace ref {
CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight);
}  // namespace ref
namespace cpu {
CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight);
}  // namespace cpu
namespace cuda {
CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight);
}  // namespace cuda

}  // namespace mamba::ops

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
  double loss = 0;     // mean over counted rows
  int64_t count = 0;   // rows with target ≥ 0
  Tensor dhidden;      // [M, d] f32 when gradients were asked for
  Tensor predictions;  // [M] i32 argmax of each row's logits
};

// targets [M] i32 (−1 = ignore; any other value outside [0, V) is an error naming its row).
// dweight (f32 [V, d]) accumulates when non-null and with_grad; with_grad = false computes only
// the loss and predictions. With no counted row the loss and the gradients are 0.
// The CPU kernel reduces in a fixed order: the same inputs give the same bits at a fixed
// thread count.
void check_cross_entropy_inputs(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                const Tensor* dweight);
CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight);

namespace ref {  // float64: dhidden is f64; dweight of any float dtype accumulates
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

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

// The mean loss over the counted rows and their count, kept where the loss was computed: on the
// GPU nothing waits for them until they are read (mean() and count() wait for the GPU).
struct LossTotals {
  Tensor values;  // f64 [2]: {mean loss, counted rows}
  double mean() const;
  int64_t count() const;
  static LossTotals on_host(double mean, int64_t count);
};

struct CrossEntropyResult {
  LossTotals loss;     // mean over rows with target ≥ 0, and their count
  Tensor dhidden;      // [M, d] f32 when gradients were asked for
  Tensor predictions;  // [M] i32 argmax of each row's logits
};

// Every target in [−1, vocab), else an error naming the target and its row (targets on the GPU are
// copied to the host for it: callers that hold them on the host check them there, before uploading).
void check_targets(const Tensor& targets, int64_t vocab);

// targets [M] i32 (−1 = ignore; any other value outside [0, V) is an error naming its row; a
// caller that checked them with check_targets passes targets_checked, so nothing waits for the GPU).
// dweight (f32 [V, d]) accumulates when non-null and with_grad (with overwrite_dweight the
// gradient replaces what it holds, as in ops/linear.h); with_grad = false computes only the loss
// and predictions. With no counted row the loss and the gradients are 0.
// The CPU kernel reduces in a fixed order: the same inputs give the same bits at a fixed
// thread count.
void check_cross_entropy_inputs(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                const Tensor* dweight, bool targets_checked = false);
CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight, bool targets_checked = false,
                                         bool overwrite_dweight = false);

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
                                         bool with_grad, Tensor* dweight, bool overwrite_dweight);
// Bytes of float32 logits per block of rows (default 512 MiB) and of bf16 gradient gathered over
// blocks before one dW product (default 2 GiB); tests shrink them to cover several blocks and
// groups at small sizes. Zero restores a default.
void set_lm_head_block_bytes(int64_t logit_bytes, int64_t gradient_bytes);
}  // namespace cuda

}  // namespace mamba::ops

// Selective scan entry points that write into caller-owned GPU tensors, for callers that reuse
// buffers across calls (benchmarks, a model's activation arena). Same math and checks as
// ops::cuda::selective_scan_forward / _backward in ops/selective_scan.h; `grads` holds one tensor of
// the documented shape and dtype for each gradient that exists (zeroed and filled here).
#pragma once
#include "ops/selective_scan.h"

namespace mamba::ops::cuda_detail {

void selective_scan_forward_into(const ScanInputs& in, const Tensor& out, const Tensor& last_state);
void selective_scan_backward_into(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state,
                                  const ScanGrads& grads);
// Positions per lane in the forward kernel (8, the default, or 16): a tuning knob for benchmarks.
void set_selective_scan_forward_items(int items);

}  // namespace mamba::ops::cuda_detail

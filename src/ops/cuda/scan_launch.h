// Selective scan entry points that write into caller-owned GPU tensors, for callers that reuse
// buffers across calls (benchmarks, a model's activation arena). Same math and checks as
// ops::cuda::selective_scan_forward / _backward in ops/selective_scan.h; `grads` holds one tensor of
// the documented shape and dtype for each gradient that exists (zeroed and filled here).
#pragma once
#include "ops/selective_scan.h"

namespace mamba::ops::cuda_detail {

// chunk_states (optional): written as ScanOutputs::chunk_states, for a backward whose
// in.chunk_states it then is.
void selective_scan_forward_into(const ScanInputs& in, const Tensor& out, const Tensor& last_state,
                                 const Tensor& chunk_states = {});
void selective_scan_backward_into(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state,
                                  const ScanGrads& grads);
// Forward kernel variant, a tuning knob for benchmarks. Lane scans (lanes own positions): 0: 8
// positions per lane, run-time N; 1: 16 positions per lane; 2: N = 16 as a compile-time constant,
// state loop unrolled, 3 blocks per SM, or 2 when the grid has fewer blocks than 4 per SM; 3: as 2,
// always 2 blocks per SM (a larger register budget). 4 (the default): state groups, four threads
// per (sequence, channel), each walking the positions with 4 of the 16 states in registers, the
// length split for about 16 warps per SM. 2, 3 and 4 apply to N = 16 only (other N run 0).
constexpr int kDefaultScanForwardVariant = 4;
void set_selective_scan_forward_variant(int variant);
// Backward kernel variant, the same kind of knob: 0: lane scans; 1 (the default): state groups for
// bf16 with N = 16, from the states the forward keeps every 32 positions (other inputs run 0).
constexpr int kDefaultScanBackwardVariant = 1;
void set_selective_scan_backward_variant(int variant);
// Length splits of the state-group forward and backward, a tuning knob too: 0 (the default) lets
// each plan its own; n > 0 cuts the length into n even splits (at most one per 256 or 32 positions).
void set_selective_scan_splits(int forward, int backward);

}  // namespace mamba::ops::cuda_detail

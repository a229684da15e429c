// The CPU conv step (ops/causal_conv1d.h, causal_conv1d_step) on a range of channels, for ops
// that run it inside a pool run of their own (the fused in-projection of a decode step).
#pragma once
#include <cstdint>

namespace mamba::ops::cpu {

// Float32 data of one conv step: x, y [batch, C], state [batch, C, K−1] (shifted in place),
// weight [C, K], bias [C] or null.
struct ConvStepPointers {
  int64_t batch, channels, width;
  const float *x, *weight, *bias;
  float *state, *y;
  bool silu;
};

// y[b, c] for c in [c0, c1) of every sequence b, and those channels' states shifted.
void conv_step_channels(const ConvStepPointers &p, int64_t c0, int64_t c1);

}  // namespace mamba::ops::cpu

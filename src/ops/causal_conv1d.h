// Causal depthwise 1-D convolution over time, with optional SiLU, and its one-token step.
//
// For batch b, position t, channel c, kernel width K (layouts token-major):
//   preₜ[c] = bias[c] + Σ_{k=0}^{K−1} w[c,k] · x_{t−K+1+k}[c]
//   outₜ[c] = SiLU(preₜ[c]) when silu, else preₜ[c]
// where x at positions before 0 comes from `initial_state` ([batch, C, K−1], oldest first) or is 0.
//
// Variable lengths as in selective_scan.h: positions ≥ lengths[b] give 0 and do not enter the
// state. final_state[b] holds the K−1 inputs before position lengths[b] (oldest first), taking
// from the initial state when the sequence is shorter than K−1: exactly the state a loop of
// causal_conv1d_step calls over the same tokens leaves behind.
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

struct ConvInputs {
  Tensor x;              // [batch, L, C]  f32 | bf16 | f64 (f64: reference only)
  Tensor weight;         // [C, K]  f32 | bf16 | f16 (a checkpoint's [C, 1, K] viewed as [C, K])
  Tensor bias;           // [C] dtype of weight, optional
  Tensor initial_state;  // [batch, C, K−1] f32, optional
  Tensor lengths;        // [batch] i32, optional
  bool silu = true;
};

struct ConvOutputs {
  Tensor out;          // [batch, L, C], dtype of x
  Tensor final_state;  // [batch, C, K−1] f32
};

// Gradients of Σ out·dout; dweight/dbias f32 (same shapes as weight/bias), dx dtype of x,
// dinitial_state f32 defined iff initial_state is. Given dweight_into / dbias_into (f32, as many
// elements as the weight / bias: a model's gradient buffers, zeroed once per step), the backward
// adds dweight / dbias there and leaves them undefined here: no zeroed tensor and no add per call.
struct ConvGrads {
  Tensor dx, dweight, dbias, dinitial_state;
};

// Validate shapes/dtypes/devices/lengths with messages naming the tensor; used by every backend.
// The weight may also be given as the checkpoint's [C, 1, K].
void check_conv_inputs(const ConvInputs& in);
void check_conv_step_inputs(const ConvInputs& step, const Tensor& state);

ConvOutputs causal_conv1d_forward(const ConvInputs& in);
ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout, Tensor* dweight_into = nullptr,
                                 Tensor* dbias_into = nullptr);
// One token: x [batch, C]; state [batch, C, K−1] f32 shifted in place (x enters as newest);
// returns out [batch, C]. `in.x` is the token; `in.initial_state`/`in.lengths` are ignored.
Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state);

namespace ref {  // float64 loops: outputs, states and gradients are f64 (a step's state: any float dtype)
ConvOutputs causal_conv1d_forward(const ConvInputs& in);
ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout);
Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state);
}  // namespace ref
namespace cpu {
ConvOutputs causal_conv1d_forward(const ConvInputs& in);
ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout, Tensor* dweight_into = nullptr,
                                 Tensor* dbias_into = nullptr);
Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state);
}  // namespace cpu
namespace cuda {
ConvOutputs causal_conv1d_forward(const ConvInputs& in);
ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout, Tensor* dweight_into = nullptr,
                                 Tensor* dbias_into = nullptr);
Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state);
// The step of the first half of step.x's columns ([batch, 2C]: a decode in-projection's [x | z];
// weight [C, K]), copying the second half into z_out [batch, C] in the same kernel: the column split
// and the conv step of the in-projection's product as one launch (ops/cuda/in_projection_step.cu).
Tensor causal_conv1d_step_first_half(const ConvInputs& step, Tensor& state, Tensor& z_out);
}  // namespace cuda

}  // namespace mamba::ops

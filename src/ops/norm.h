// Residual add fused with RMSNorm or LayerNorm, over the last dimension d of rows [M, d].
//
//   s      = x + residual            (residual optional; s is kept in float32: residual_in_fp32)
//   RMSNorm:   out = s / sqrt(mean(s²) + eps) ⊙ w
//   LayerNorm: out = (s − mean(s)) / sqrt(var(s) + eps) ⊙ w + b      (biased variance)
// Row sums are accumulated in blocks, not one running float32 sum.
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

enum class NormKind { rms, layer };

struct NormInputs {
  Tensor x;         // [M, d] f32 | bf16 | f64 (reference)
  Tensor residual;  // [M, d] f32, optional
  Tensor weight;    // [d] f32 | bf16 | f16
  Tensor bias;      // [d], LayerNorm only, optional
  float eps = 1e-5f;
  NormKind kind = NormKind::rms;
};

struct NormOutputs {
  Tensor out;           // [M, d], dtype of x
  Tensor residual_out;  // [M, d] f32: s = x + residual (x itself when no residual)
  Tensor rstd;          // [M] f32: 1/sqrt(mean(s²)+eps), or 1/sqrt(var+eps) for LayerNorm
  Tensor mean;          // [M] f32, LayerNorm only
};

// Gradients given dout (of `out`) and dresidual_out (gradient reaching residual_out from later
// layers, optional): ds is the gradient of s, which is both dx and dresidual; dweight/dbias f32.
// dx is ds in the dtype of x (ds itself when they agree), for the layer that produced x: written by
// the same kernel, so bf16 activations need no conversion pass. Given dweight_into / dbias_into
// (f32 [d]: a model's gradient buffers, zeroed once per step), the backward adds dweight / dbias
// there and leaves them undefined here: no zeroed tensor and no separate add of a result.
struct NormGrads {
  Tensor ds, dx, dweight, dbias;
};

// Validates shapes/dtypes/devices of `in` with messages naming the tensor; used by every backend.
void check_norm_inputs(const NormInputs& in);

NormOutputs add_norm_forward(const NormInputs& in);
NormGrads add_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                            const Tensor& dresidual_out = {}, Tensor* dweight_into = nullptr,
                            Tensor* dbias_into = nullptr);

namespace ref {  // float64 loops: every output and gradient is f64
NormOutputs add_norm_forward(const NormInputs& in);
NormGrads add_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                            const Tensor& dresidual_out = {});
}  // namespace ref
namespace cpu {
NormOutputs add_norm_forward(const NormInputs& in);
NormGrads add_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                            const Tensor& dresidual_out, Tensor* dweight_into = nullptr, Tensor* dbias_into = nullptr);
}  // namespace cpu
namespace cuda {
NormOutputs add_norm_forward(const NormInputs& in);
NormGrads add_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                            const Tensor& dresidual_out, Tensor* dweight_into = nullptr, Tensor* dbias_into = nullptr);
}  // namespace cuda

}  // namespace mamba::ops

// The LTI scan: the selective scan with selection switched off (MAMBA.md, "The LTI ablation",
// the S4-like model of the Mamba paper's Table 1). Nothing depends on the input but u and z:
//   Δ[d]     = softplus(delta_bias[d])
//   hₜ[d,n]  = exp(Δ[d]·A[d,n]) · h_{t−1}[d,n] + Δ[d] · B[d,n] · uₜ[d],   h_{−1} = 0
//   yₜ[d]    = Σₙ C[d,n] · hₜ[d,n] + D[d] · uₜ[d]
//   outₜ[d]  = yₜ[d] · SiLU(zₜ[d])
// Layouts: u, z, out [batch, L, D]; A, B, C [D, N]; D, delta_bias [D]. Whole sequences only (no
// carried state, no lengths): the ablation is trained and evaluated, not served. The backward keeps
// one sequence-channel's states [L, N] in scratch at a time, never [batch, L, D, N].
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

struct LtiScanInputs {
  Tensor u, z;           // [batch, L, D] f32 (f64 for the reference)
  Tensor A, B, C;        // [D, N] f32
  Tensor D, delta_bias;  // [D] f32
};

struct LtiScanGrads {
  Tensor du, dz;           // [batch, L, D]
  Tensor dA, dB, dC;       // [D, N] f32
  Tensor dD, ddelta_bias;  // [D] f32
};

void check_lti_scan_inputs(const LtiScanInputs& in);
Tensor lti_scan_forward(const LtiScanInputs& in);
LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout);

namespace ref {  // float64 loops; outputs and gradients f64
Tensor lti_scan_forward(const LtiScanInputs& in);
LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout);
}  // namespace ref
namespace cpu {  // float32, threaded over channels
Tensor lti_scan_forward(const LtiScanInputs& in);
LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout);
}  // namespace cpu

}  // namespace mamba::ops

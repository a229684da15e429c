// The LTI scan in float32, threaded over channels (each channel's gradients of A, B, C, D and
// the bias are summed over the batch by one thread, so the result does not depend on threads).
#include "ops/lti_scan.h"

#include "core/threads.h"
#include "ops/lti_scan_loops.h"

namespace mamba::ops::cpu {

namespace {
void check_f32(const LtiScanInputs& in) {
  for (const Tensor* t : {&in.u, &in.z, &in.A, &in.B, &in.C, &in.D, &in.delta_bias})
    check_dtype(*t, DType::f32, "LTI scan (CPU) input");
}
}  // namespace

Tensor lti_scan_forward(const LtiScanInputs& in) {
  check_f32(in);
  Tensor out = Tensor::empty(in.u.shape(), DType::f32);
  parallel_for(in.u.size(2),
               [&](int64_t d0, int64_t d1, int) { lti_detail::forward_channels<float>(in, out, d0, d1); });
  return out;
}

LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout) {
  check_f32(in);
  check_dtype(dout, DType::f32, "LTI scan (CPU) dout");
  LtiScanGrads g = lti_detail::allocate_grads(in, DType::f32);
  parallel_for(in.u.size(2),
               [&](int64_t d0, int64_t d1, int) { lti_detail::backward_channels<float>(in, dout, g, d0, d1); });
  return g;
}

}  // namespace mamba::ops::cpu

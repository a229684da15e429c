// The LTI scan in float64 loops: the definition the CPU kernel is tested against.
#include "ops/lti_scan.h"

#include "ops/lti_scan_loops.h"

namespace mamba::ops::ref {

namespace {
LtiScanInputs in_f64(const LtiScanInputs& in) {
  return {in.u.to(DType::f64), in.z.to(DType::f64), in.A.to(DType::f64),         in.B.to(DType::f64),
          in.C.to(DType::f64), in.D.to(DType::f64), in.delta_bias.to(DType::f64)};
}
}  // namespace

Tensor lti_scan_forward(const LtiScanInputs& in) {
  check_lti_scan_inputs(in);
  LtiScanInputs x = in_f64(in);
  Tensor out = Tensor::empty(in.u.shape(), DType::f64);
  lti_detail::forward_channels<double>(x, out, 0, in.u.size(2));
  return out;
}

LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout) {
  check_lti_scan_inputs(in);
  LtiScanInputs x = in_f64(in);
  LtiScanGrads g = lti_detail::allocate_grads(in, DType::f64);
  lti_detail::backward_channels<double>(x, dout.to(DType::f64), g, 0, in.u.size(2));
  return g;
}

}  // namespace mamba::ops::ref

// Input checks and device dispatch of the LTI scan.
#include "ops/lti_scan.h"

namespace mamba::ops {

void check_lti_scan_inputs(const LtiScanInputs& in) {
  MAMBA_CHECK(in.u.defined() && in.u.ndim() == 3, "LTI scan: u must be [batch, L, D]");
  MAMBA_CHECK(in.A.defined() && in.A.ndim() == 2, "LTI scan: A must be [D, N]");
  const int64_t dim = in.u.size(2), n = in.A.size(1);
  check_shape(in.z, in.u.shape(), "LTI scan: z");
  for (auto [t, name] : {std::pair{&in.A, "LTI scan: A"}, {&in.B, "LTI scan: B"}, {&in.C, "LTI scan: C"}})
    check_shape(*t, {dim, n}, name);
  check_shape(in.D, {dim}, "LTI scan: D");
  check_shape(in.delta_bias, {dim}, "LTI scan: delta_bias");
  for (const Tensor* t : {&in.z, &in.A, &in.B, &in.C, &in.D, &in.delta_bias})
    MAMBA_CHECK(t->device() == in.u.device(), "LTI scan: every input must be on ", device_name(in.u.device()));
}

Tensor lti_scan_forward(const LtiScanInputs& in) {
  check_lti_scan_inputs(in);
  MAMBA_CHECK(in.u.device() == Device::cpu, "the LTI ablation (--no-selection) runs on the CPU only");
  return cpu::lti_scan_forward(in);
}

LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout) {
  check_lti_scan_inputs(in);
  check_shape(dout, in.u.shape(), "LTI scan: dout");
  MAMBA_CHECK(in.u.device() == Device::cpu, "the LTI ablation (--no-selection) runs on the CPU only");
  return cpu::lti_scan_backward(in, dout);
}

}  // namespace mamba::ops

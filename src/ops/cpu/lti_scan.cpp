// The LTI scan in float32, threaded over channels (each channel's gradients of A, B, C, D and
// the bias are summed over the batch by one thread, so the result does not depend on threads).
#include "ops/lti_scan.h"

#include "core/threads.h"
#include "ops/lti_scan_loops.h"

namespace mamba::ops::cpu {

Tensor lti_scan_forward(const LtiScanInputs& in) {
  for (const Tensor* t : {&in.u, &in.z, &in.A, &in.B, &in.C, &in.D, &in.delta_bias})
    check_dtype(*t, DType::f32, "LTI scan (CPU) input");
  const int64_t batch = in.u.size(0), length = in.u.size(1), dim = in.u.size(2), n = in.A.size(1);
  Tensor out = Tensor::empty(in.u.shape(), DType::f32);
  parallel_for(dim, [&](int64_t d0, int64_t d1, int) {
    for (int64_t d = d0; d < d1; ++d) {
      lti_detail::Channel<float> ch(in.delta_bias.data<float>()[d], in.A.data<float>() + d * n,
                                    in.B.data<float>() + d * n, n);
      for (int64_t b = 0; b < batch; ++b) {
        int64_t o = b * length * dim + d;
        lti_detail::forward_channel(ch, in.C.data<float>() + d * n, in.D.data<float>()[d], in.u.data<float>() + o,
                                    in.z.data<float>() + o, out.data<float>() + o, length, dim, n);
      }
    }
  });
  return out;
}

LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout) {
  check_dtype(dout, DType::f32, "LTI scan (CPU) dout");
  const int64_t batch = in.u.size(0), length = in.u.size(1), dim = in.u.size(2), n = in.A.size(1);
  LtiScanGrads g{Tensor::empty(in.u.shape(), DType::f32), Tensor::empty(in.u.shape(), DType::f32),
                 Tensor::zeros({dim, n}, DType::f32),     Tensor::zeros({dim, n}, DType::f32),
                 Tensor::zeros({dim, n}, DType::f32),     Tensor::zeros({dim}, DType::f32),
                 Tensor::zeros({dim}, DType::f32)};
  parallel_for(dim, [&](int64_t d0, int64_t d1, int) {
    std::vector<float> scratch;
    for (int64_t d = d0; d < d1; ++d) {
      const float *A = in.A.data<float>() + d * n, *B = in.B.data<float>() + d * n;
      float bias = in.delta_bias.data<float>()[d];
      lti_detail::Channel<float> ch(bias, A, B, n);
      for (int64_t b = 0; b < batch; ++b) {
        int64_t o = b * length * dim + d;
        lti_detail::backward_channel(ch, A, B, in.C.data<float>() + d * n, in.D.data<float>()[d], bias,
                                     in.u.data<float>() + o, in.z.data<float>() + o, dout.data<float>() + o,
                                     g.du.data<float>() + o, g.dz.data<float>() + o, g.dA.data<float>() + d * n,
                                     g.dB.data<float>() + d * n, g.dC.data<float>() + d * n, g.dD.data<float>() + d,
                                     g.ddelta_bias.data<float>() + d, scratch, length, dim, n);
      }
    }
  });
  return g;
}

}  // namespace mamba::ops::cpu

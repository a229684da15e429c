// The LTI scan in float64 loops: the definition the CPU kernel is tested against.
#include "ops/lti_scan.h"

#include "ops/lti_scan_loops.h"

namespace mamba::ops::ref {

namespace {
struct Inputs64 {
  Tensor u, z, A, B, C, D, bias;
  explicit Inputs64(const LtiScanInputs& in)
      : u(in.u.to(DType::f64)),
        z(in.z.to(DType::f64)),
        A(in.A.to(DType::f64)),
        B(in.B.to(DType::f64)),
        C(in.C.to(DType::f64)),
        D(in.D.to(DType::f64)),
        bias(in.delta_bias.to(DType::f64)) {}
};
}  // namespace

Tensor lti_scan_forward(const LtiScanInputs& in) {
  check_lti_scan_inputs(in);
  Inputs64 x(in);
  const int64_t batch = in.u.size(0), length = in.u.size(1), dim = in.u.size(2), n = in.A.size(1);
  Tensor out = Tensor::empty(in.u.shape(), DType::f64);
  for (int64_t d = 0; d < dim; ++d) {
    lti_detail::Channel<double> ch(x.bias.data<double>()[d], x.A.data<double>() + d * n, x.B.data<double>() + d * n, n);
    for (int64_t b = 0; b < batch; ++b) {
      int64_t offset = b * length * dim + d;
      lti_detail::forward_channel(ch, x.C.data<double>() + d * n, x.D.data<double>()[d], x.u.data<double>() + offset,
                                  x.z.data<double>() + offset, out.data<double>() + offset, length, dim, n);
    }
  }
  return out;
}

LtiScanGrads lti_scan_backward(const LtiScanInputs& in, const Tensor& dout) {
  check_lti_scan_inputs(in);
  Inputs64 x(in);
  Tensor dy = dout.to(DType::f64);
  const int64_t batch = in.u.size(0), length = in.u.size(1), dim = in.u.size(2), n = in.A.size(1);
  LtiScanGrads g{Tensor::empty(in.u.shape(), DType::f64), Tensor::empty(in.u.shape(), DType::f64),
                 Tensor::zeros({dim, n}, DType::f64),     Tensor::zeros({dim, n}, DType::f64),
                 Tensor::zeros({dim, n}, DType::f64),     Tensor::zeros({dim}, DType::f64),
                 Tensor::zeros({dim}, DType::f64)};
  std::vector<double> scratch;
  for (int64_t d = 0; d < dim; ++d) {
    const double *A = x.A.data<double>() + d * n, *B = x.B.data<double>() + d * n;
    double bias = x.bias.data<double>()[d];
    lti_detail::Channel<double> ch(bias, A, B, n);
    for (int64_t b = 0; b < batch; ++b) {
      int64_t o = b * length * dim + d;
      lti_detail::backward_channel(ch, A, B, x.C.data<double>() + d * n, x.D.data<double>()[d], bias,
                                   x.u.data<double>() + o, x.z.data<double>() + o, dy.data<double>() + o,
                                   g.du.data<double>() + o, g.dz.data<double>() + o, g.dA.data<double>() + d * n,
                                   g.dB.data<double>() + d * n, g.dC.data<double>() + d * n, g.dD.data<double>() + d,
                                   g.ddelta_bias.data<double>() + d, scratch, length, dim, n);
    }
  }
  return g;
}

}  // namespace mamba::ops::ref

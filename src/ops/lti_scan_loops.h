// The LTI scan's loops for one channel d over one sequence, written once for the float64
// reference (Real = double) and the float32 CPU kernel (Real = float). See lti_scan.h.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "ops/lti_scan.h"

namespace mamba::ops::lti_detail {

template <typename Real>
Real softplus(Real x) {
  return x > Real(20) ? x : std::log1p(std::exp(x));
}
template <typename Real>
Real sigmoid(Real x) {
  return Real(1) / (Real(1) + std::exp(-x));
}

// Per-channel constants: Δ, and for each state the decay a = exp(Δ·A) and input weight b = Δ·B.
template <typename Real>
struct Channel {
  Real delta;
  std::vector<Real> decay, input_weight;
  Channel(Real bias, const Real* A, const Real* B, int64_t n) : delta(softplus(bias)), decay(n), input_weight(n) {
    for (int64_t i = 0; i < n; ++i) {
      decay[size_t(i)] = std::exp(delta * A[i]);
      input_weight[size_t(i)] = delta * B[i];
    }
  }
};

// out[t·stride] for t < L, from u and z read with the same stride (the [batch, L, D] row pitch).
template <typename Real>
void forward_channel(const Channel<Real>& ch, const Real* C, Real skip, const Real* u, const Real* z, Real* out,
                     int64_t length, int64_t stride, int64_t n) {
  std::vector<Real> h(size_t(n), Real(0));
  for (int64_t t = 0; t < length; ++t) {
    Real x = u[t * stride], y = skip * x;
    for (int64_t i = 0; i < n; ++i) {
      h[size_t(i)] = ch.decay[size_t(i)] * h[size_t(i)] + ch.input_weight[size_t(i)] * x;
      y += C[i] * h[size_t(i)];
    }
    Real g = z[t * stride];
    out[t * stride] = y * g * sigmoid(g);
  }
}

// Gradients of one channel of one sequence. du/dz are written; dA, dB, dC ([n]), dD and
// ddelta_bias accumulate. `states` is scratch of at least L·n values.
template <typename Real>
void backward_channel(const Channel<Real>& ch, const Real* A, const Real* B, const Real* C, Real skip, Real bias,
                      const Real* u, const Real* z, const Real* dout, Real* du, Real* dz, Real* dA, Real* dB, Real* dC,
                      Real* dD, Real* ddelta_bias, std::vector<Real>& states, int64_t length, int64_t stride,
                      int64_t n) {
  states.assign(size_t(length * n), Real(0));
  for (int64_t t = 0; t < length; ++t)
    for (int64_t i = 0; i < n; ++i) {
      Real previous = t ? states[size_t((t - 1) * n + i)] : Real(0);
      states[size_t(t * n + i)] = ch.decay[size_t(i)] * previous + ch.input_weight[size_t(i)] * u[t * stride];
    }
  std::vector<Real> adjoint(size_t(n), Real(0)), d_decay(size_t(n), Real(0)), d_weight(size_t(n), Real(0));
  Real d_delta = 0;
  for (int64_t t = length; t-- > 0;) {
    Real x = u[t * stride], g = z[t * stride], s = sigmoid(g);
    Real y = skip * x;
    for (int64_t i = 0; i < n; ++i) y += C[i] * states[size_t(t * n + i)];
    Real dy = dout[t * stride] * g * s;
    dz[t * stride] = dout[t * stride] * y * s * (Real(1) + g * (Real(1) - s));
    *dD += dy * x;
    Real dx = skip * dy;
    for (int64_t i = 0; i < n; ++i) {
      Real h = states[size_t(t * n + i)], previous = t ? states[size_t((t - 1) * n + i)] : Real(0);
      dC[i] += dy * h;
      adjoint[size_t(i)] = C[i] * dy + ch.decay[size_t(i)] * adjoint[size_t(i)];  // zero past the end
      d_decay[size_t(i)] += adjoint[size_t(i)] * previous;
      d_weight[size_t(i)] += adjoint[size_t(i)] * x;
      dx += adjoint[size_t(i)] * ch.input_weight[size_t(i)];
    }
    du[t * stride] = dx;
  }
  for (int64_t i = 0; i < n; ++i) {
    // a = exp(Δ·A), b = Δ·B.
    dA[i] += d_decay[size_t(i)] * ch.decay[size_t(i)] * ch.delta;
    dB[i] += d_weight[size_t(i)] * ch.delta;
    d_delta += d_decay[size_t(i)] * ch.decay[size_t(i)] * A[i] + d_weight[size_t(i)] * B[i];
  }
  *ddelta_bias += d_delta * sigmoid(bias);
}

// Gradient tensors for `in`, zeroed where they accumulate.
inline LtiScanGrads allocate_grads(const LtiScanInputs& in, DType dtype) {
  const int64_t dim = in.u.size(2), n = in.A.size(1);
  return {Tensor::empty(in.u.shape(), dtype), Tensor::empty(in.u.shape(), dtype), Tensor::zeros({dim, n}, dtype),
          Tensor::zeros({dim, n}, dtype),     Tensor::zeros({dim, n}, dtype),     Tensor::zeros({dim}, dtype),
          Tensor::zeros({dim}, dtype)};
}

// Channels [d0, d1) of every sequence; every tensor holds Real.
template <typename Real>
void forward_channels(const LtiScanInputs& in, Tensor& out, int64_t d0, int64_t d1) {
  const int64_t batch = in.u.size(0), length = in.u.size(1), dim = in.u.size(2), n = in.A.size(1);
  for (int64_t d = d0; d < d1; ++d) {
    Channel<Real> ch(in.delta_bias.data<Real>()[d], in.A.data<Real>() + d * n, in.B.data<Real>() + d * n, n);
    for (int64_t b = 0; b < batch; ++b) {
      int64_t o = b * length * dim + d;
      forward_channel(ch, in.C.data<Real>() + d * n, in.D.data<Real>()[d], in.u.data<Real>() + o, in.z.data<Real>() + o,
                      out.data<Real>() + o, length, dim, n);
    }
  }
}

template <typename Real>
void backward_channels(const LtiScanInputs& in, const Tensor& dout, LtiScanGrads& g, int64_t d0, int64_t d1) {
  const int64_t batch = in.u.size(0), length = in.u.size(1), dim = in.u.size(2), n = in.A.size(1);
  std::vector<Real> scratch;
  for (int64_t d = d0; d < d1; ++d) {
    const Real *A = in.A.data<Real>() + d * n, *B = in.B.data<Real>() + d * n;
    Real bias = in.delta_bias.data<Real>()[d];
    Channel<Real> ch(bias, A, B, n);
    for (int64_t b = 0; b < batch; ++b) {
      int64_t o = b * length * dim + d;
      backward_channel(ch, A, B, in.C.data<Real>() + d * n, in.D.data<Real>()[d], bias, in.u.data<Real>() + o,
                       in.z.data<Real>() + o, dout.data<Real>() + o, g.du.data<Real>() + o, g.dz.data<Real>() + o,
                       g.dA.data<Real>() + d * n, g.dB.data<Real>() + d * n, g.dC.data<Real>() + d * n,
                       g.dD.data<Real>() + d, g.ddelta_bias.data<Real>() + d, scratch, length, dim, n);
    }
  }
}

}  // namespace mamba::ops::lti_detail

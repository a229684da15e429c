#include "ops/causal_conv1d.h"

#include <cmath>
#include <vector>

namespace mamba::ops::ref {

namespace {

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

struct Problem {
  int64_t batch, L, C, K;
  std::vector<double> x, w, bias, initial;  // w [C, K]; initial [batch, C, K−1]
  std::vector<int64_t> length;

  // Input at position p ∈ [−(K−1), L) of sequence b, channel c.
  double input(int64_t b, int64_t p, int64_t c) const {
    if (p >= 0) return x[size_t((b * L + p) * C + c)];
    return initial[size_t((b * C + c) * (K - 1) + (K - 1 + p))];
  }
  double pre(int64_t b, int64_t t, int64_t c) const {
    double sum = bias[size_t(c)];
    for (int64_t k = 0; k < K; ++k) sum += w[size_t(c * K + k)] * input(b, t - K + 1 + k, c);
    return sum;
  }
};

Problem load(const ConvInputs& in) {
  check_conv_inputs(in);
  Problem p;
  p.batch = in.x.size(0);
  p.L = in.x.size(1);
  p.C = in.x.size(2);
  p.K = in.weight.size(-1);
  p.x = in.x.to_double_vector();
  p.w = in.weight.to_double_vector();
  p.bias = in.bias.defined() ? in.bias.to_double_vector() : std::vector<double>(size_t(p.C), 0.0);
  p.initial = in.initial_state.defined() ? in.initial_state.to_double_vector()
                                         : std::vector<double>(size_t(p.batch * p.C * (p.K - 1)), 0.0);
  p.length.assign(size_t(p.batch), p.L);
  if (in.lengths.defined())
    for (int64_t b = 0; b < p.batch; ++b) p.length[size_t(b)] = int64_t(in.lengths.item(b));
  return p;
}

}  // namespace

ConvOutputs causal_conv1d_forward(const ConvInputs& in) {
  const Problem p = load(in);
  std::vector<double> out(size_t(p.batch * p.L * p.C), 0.0), state(size_t(p.batch * p.C * (p.K - 1)));
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t t = 0; t < p.length[size_t(b)]; ++t)
      for (int64_t c = 0; c < p.C; ++c) {
        double v = p.pre(b, t, c);
        out[size_t((b * p.L + t) * p.C + c)] = in.silu ? v * sigmoid(v) : v;
      }
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t j = 0; j < p.K - 1; ++j)
        state[size_t((b * p.C + c) * (p.K - 1) + j)] = p.input(b, p.length[size_t(b)] - (p.K - 1) + j, c);
  }
  ConvOutputs o;
  o.out = Tensor::from_vector(out, in.x.shape(), DType::f64);
  o.final_state = Tensor::from_vector(state, {p.batch, p.C, p.K - 1}, DType::f64);
  return o;
}

ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout) {
  const Problem p = load(in);
  check_shape(dout, in.x.shape(), "conv output gradient");
  std::vector<double> g = dout.to_double_vector();
  std::vector<double> dx(p.x.size(), 0.0), dw(p.w.size(), 0.0), db(size_t(p.C), 0.0), dinit(p.initial.size(), 0.0);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.length[size_t(b)]; ++t)
      for (int64_t c = 0; c < p.C; ++c) {
        double v = p.pre(b, t, c), s = sigmoid(v);
        double dpre = g[size_t((b * p.L + t) * p.C + c)] * (in.silu ? s * (1 + v * (1 - s)) : 1.0);
        db[size_t(c)] += dpre;
        for (int64_t k = 0; k < p.K; ++k) {
          int64_t pos = t - p.K + 1 + k;
          dw[size_t(c * p.K + k)] += dpre * p.input(b, pos, c);
          double contribution = dpre * p.w[size_t(c * p.K + k)];
          if (pos >= 0) {
            dx[size_t((b * p.L + pos) * p.C + c)] += contribution;
          } else {
            dinit[size_t((b * p.C + c) * (p.K - 1) + (p.K - 1 + pos))] += contribution;
          }
        }
      }
  ConvGrads grads;
  grads.dx = Tensor::from_vector(dx, in.x.shape(), DType::f64);
  grads.dweight = Tensor::from_vector(dw, in.weight.shape(), DType::f64);
  if (in.bias.defined()) grads.dbias = Tensor::from_vector(db, {p.C}, DType::f64);
  if (in.initial_state.defined())
    grads.dinitial_state = Tensor::from_vector(dinit, in.initial_state.shape(), DType::f64);
  return grads;
}

Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state) {
  check_conv_step_inputs(step, state);
  const int64_t batch = step.x.size(0), C = step.x.size(1), K = step.weight.size(-1);
  std::vector<double> x = step.x.to_double_vector(), w = step.weight.to_double_vector(), s = state.to_double_vector();
  std::vector<double> bias = step.bias.defined() ? step.bias.to_double_vector() : std::vector<double>(size_t(C), 0.0);
  std::vector<double> out(size_t(batch * C));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < C; ++c) {
      double* sc = s.data() + (b * C + c) * (K - 1);
      double v = bias[size_t(c)] + w[size_t(c * K + K - 1)] * x[size_t(b * C + c)];
      for (int64_t k = 0; k < K - 1; ++k) v += w[size_t(c * K + k)] * sc[k];
      for (int64_t k = 0; k + 1 < K - 1; ++k) sc[k] = sc[k + 1];
      if (K > 1) sc[K - 2] = x[size_t(b * C + c)];
      out[size_t(b * C + c)] = step.silu ? v * sigmoid(v) : v;
    }
  state.copy_from(Tensor::from_vector(s, state.shape(), DType::f64));
  return Tensor::from_vector(out, {batch, C}, DType::f64);
}

}  // namespace mamba::ops::ref

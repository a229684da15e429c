// Float64 reference of the selective scan: plain loops over batch, time, channel and state that
// follow the formulas of ops/selective_scan.h literally. The backward keeps every state h_t of
// one sequence (memory is no concern here) and runs the analytic reverse-time recurrence:
//   g_t = dL/dh_t = C_t·dy_t + exp(δ'_{t+1}·A)·g_{t+1},  g_{len−1} starts from dlast_state,
// from which the gradients of δ', A, B, u and the initial state (g after position 0) follow.
#include "ops/selective_scan.h"

#include <cmath>
#include <vector>

namespace mamba::ops::ref {

namespace {

double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Every input as float64 vectors, with the sizes of the problem.
struct Problem {
  int64_t batch = 0, length = 0, dim = 0, n_states = 0;
  std::vector<double> u, delta, A, B, C, D, z, delta_bias, initial_state;
  std::vector<int64_t> lengths;
  bool softplus = false;

  explicit Problem(const ScanInputs& in) {
    batch = in.u.size(0);
    length = in.u.size(1);
    dim = in.u.size(2);
    n_states = in.A.size(1);
    u = in.u.to_double_vector();
    delta = in.delta.to_double_vector();
    A = in.A.to_double_vector();
    B = in.B.to_double_vector();
    C = in.C.to_double_vector();
    if (in.D.defined()) D = in.D.to_double_vector();
    if (in.z.defined()) z = in.z.to_double_vector();
    if (in.delta_bias.defined()) delta_bias = in.delta_bias.to_double_vector();
    if (in.initial_state.defined()) initial_state = in.initial_state.to_double_vector();
    lengths.assign(size_t(batch), length);
    if (in.lengths.defined())
      for (int64_t b = 0; b < batch; ++b) lengths[size_t(b)] = int64_t(in.lengths.item(b));
    softplus = in.delta_softplus;
  }
  size_t token(int64_t b, int64_t t, int64_t d) const { return size_t((b * length + t) * dim + d); }
  size_t bc(int64_t b, int64_t t, int64_t n) const { return size_t((b * length + t) * n_states + n); }
  size_t state(int64_t b, int64_t d, int64_t n) const { return size_t((b * dim + d) * n_states + n); }
  double delta_input(int64_t b, int64_t t, int64_t d) const {
    return delta[token(b, t, d)] + (delta_bias.empty() ? 0.0 : delta_bias[size_t(d)]);
  }
  double delta_prime(int64_t b, int64_t t, int64_t d) const {
    double x = delta_input(b, t, d);
    return softplus ? ref::softplus(x) : x;
  }
  double h0(int64_t b, int64_t d, int64_t n) const {
    return initial_state.empty() ? 0.0 : initial_state[state(b, d, n)];
  }
};

Tensor f64_tensor(std::vector<double> values, const Shape& shape) {
  return Tensor::from_vector(values, shape, DType::f64);
}

}  // namespace

ScanOutputs selective_scan_forward(const ScanInputs& in) {
  check_scan_inputs(in);
  Problem p(in);
  std::vector<double> out(p.u.size(), 0.0), last(size_t(p.batch * p.dim * p.n_states));
  std::vector<double> h(size_t(p.n_states));
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t d = 0; d < p.dim; ++d) {
      for (int64_t n = 0; n < p.n_states; ++n) h[size_t(n)] = p.h0(b, d, n);
      for (int64_t t = 0; t < p.lengths[size_t(b)]; ++t) {
        double dp = p.delta_prime(b, t, d), u = p.u[p.token(b, t, d)], y = 0;
        for (int64_t n = 0; n < p.n_states; ++n) {
          double& hn = h[size_t(n)];
          hn = std::exp(dp * p.A[size_t(d * p.n_states + n)]) * hn + dp * p.B[p.bc(b, t, n)] * u;
          y += p.C[p.bc(b, t, n)] * hn;
        }
        if (!p.D.empty()) y += p.D[size_t(d)] * u;
        if (!p.z.empty()) {
          double z = p.z[p.token(b, t, d)];
          y *= z * sigmoid(z);
        }
        out[p.token(b, t, d)] = y;
      }
      for (int64_t n = 0; n < p.n_states; ++n) last[p.state(b, d, n)] = h[size_t(n)];
    }
  }
  return {f64_tensor(std::move(out), in.u.shape()), f64_tensor(std::move(last), {p.batch, p.dim, p.n_states}), {}};
}

ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout_tensor, const Tensor& dlast_tensor) {
  check_scan_backward_inputs(in, dout_tensor, dlast_tensor);
  Problem p(in);
  std::vector<double> dout = dout_tensor.to_double_vector();
  std::vector<double> dlast = dlast_tensor.defined() ? dlast_tensor.to_double_vector() : std::vector<double>();
  const int64_t N = p.n_states;
  std::vector<double> du(p.u.size(), 0.0), ddelta(p.u.size(), 0.0), dz(p.u.size(), 0.0);
  std::vector<double> dB(p.B.size(), 0.0), dC(p.C.size(), 0.0), dA(p.A.size(), 0.0);
  std::vector<double> dD(size_t(p.dim), 0.0), dbias(size_t(p.dim), 0.0);
  std::vector<double> dinitial(size_t(p.batch * p.dim * N), 0.0);
  // states[t + 1][n] = h_t[n] for one (b, d); states[0] is the initial state.
  std::vector<double> states(size_t((p.length + 1) * N)), g(static_cast<size_t>(N));
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t len = p.lengths[size_t(b)];
    for (int64_t d = 0; d < p.dim; ++d) {
      const double* A = &p.A[size_t(d * N)];
      for (int64_t n = 0; n < N; ++n) states[size_t(n)] = p.h0(b, d, n);
      for (int64_t t = 0; t < len; ++t) {
        double dp = p.delta_prime(b, t, d), u = p.u[p.token(b, t, d)];
        for (int64_t n = 0; n < N; ++n)
          states[size_t((t + 1) * N + n)] =
              std::exp(dp * A[n]) * states[size_t(t * N + n)] + dp * p.B[p.bc(b, t, n)] * u;
      }
      for (int64_t n = 0; n < N; ++n) g[size_t(n)] = dlast.empty() ? 0.0 : dlast[p.state(b, d, n)];
      for (int64_t t = len - 1; t >= 0; --t) {
        const size_t i = p.token(b, t, d);
        const double x = p.delta_input(b, t, d), dp = p.delta_prime(b, t, d), u = p.u[i];
        const double* h_prev = &states[size_t(t * N)];
        const double* h = &states[size_t((t + 1) * N)];
        double y = 0;
        for (int64_t n = 0; n < N; ++n) y += p.C[p.bc(b, t, n)] * h[n];
        if (!p.D.empty()) y += p.D[size_t(d)] * u;
        double dy = dout[i];
        if (!p.z.empty()) {
          double z = p.z[i], s = sigmoid(z);
          dz[i] = dout[i] * y * s * (1.0 + z * (1.0 - s));
          dy = dout[i] * z * s;
        }
        if (!p.D.empty()) {
          dD[size_t(d)] += dy * u;
          du[i] += dy * p.D[size_t(d)];
        }
        double ddp = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double Bn = p.B[p.bc(b, t, n)], a = std::exp(dp * A[n]);
          double& gn = g[size_t(n)];
          gn += dy * p.C[p.bc(b, t, n)];
          dC[p.bc(b, t, n)] += dy * h[n];
          ddp += gn * (A[n] * a * h_prev[n] + Bn * u);
          dA[size_t(d * N + n)] += gn * dp * a * h_prev[n];
          dB[p.bc(b, t, n)] += gn * dp * u;
          du[i] += gn * dp * Bn;
          gn *= a;
        }
        const double dx = p.softplus ? (x > 20.0 ? ddp : ddp * sigmoid(x)) : ddp;
        ddelta[i] = dx;
        dbias[size_t(d)] += dx;
      }
      for (int64_t n = 0; n < N; ++n) dinitial[p.state(b, d, n)] = g[size_t(n)];
    }
  }
  ScanGrads grads;
  grads.du = f64_tensor(std::move(du), in.u.shape());
  grads.ddelta = f64_tensor(std::move(ddelta), in.u.shape());
  grads.dA = f64_tensor(std::move(dA), in.A.shape());
  grads.dB = f64_tensor(std::move(dB), in.B.shape());
  grads.dC = f64_tensor(std::move(dC), in.C.shape());
  if (in.D.defined()) grads.dD = f64_tensor(std::move(dD), in.D.shape());
  if (in.z.defined()) grads.dz = f64_tensor(std::move(dz), in.z.shape());
  if (in.delta_bias.defined()) grads.ddelta_bias = f64_tensor(std::move(dbias), in.delta_bias.shape());
  if (in.initial_state.defined()) grads.dinitial_state = f64_tensor(std::move(dinitial), in.initial_state.shape());
  return grads;
}

namespace {
// δ[b, d] = Σᵣ delta[b, r] · delta_proj[d, r], the step's full-width delta from its low-rank input.
Tensor projected_delta(const ScanInputs& step) {
  const int64_t batch = step.delta.size(0), rank = step.delta.size(1), dim = step.delta_proj.size(0);
  const std::vector<double> low = step.delta.to_double_vector(), weight = step.delta_proj.to_double_vector();
  std::vector<double> delta(size_t(batch * dim), 0.0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t r = 0; r < rank; ++r)
        delta[size_t(b * dim + d)] += low[size_t(b * rank + r)] * weight[size_t(d * rank + r)];
  return f64_tensor(std::move(delta), {batch, dim});
}
}  // namespace

Tensor selective_state_update(const ScanInputs& step, Tensor& state) {
  check_step_inputs(step, state);
  MAMBA_CHECK(state.dtype() == DType::f64, "ref::selective_state_update: state must be f64, got ",
              dtype_name(state.dtype()));
  // One position of a length-1 scan whose initial state is `state`.
  const int64_t batch = step.u.size(0), dim = step.u.size(1), N = step.A.size(1);
  // With delta_proj the projected δ is f64, so every activation goes to f64 (exactly) with it.
  const bool project = step.delta_proj.defined();
  auto activation = [&](const Tensor& t, int64_t width) {
    Tensor row = t.view({batch, 1, width});
    return project ? row.to(DType::f64) : row;
  };
  ScanInputs scan = step;
  scan.delta_proj = Tensor();
  scan.u = activation(step.u, dim);
  scan.delta = project ? projected_delta(step).view({batch, 1, dim}) : activation(step.delta, dim);
  scan.B = activation(step.B, N);
  scan.C = activation(step.C, N);
  if (step.z.defined()) scan.z = activation(step.z, dim);
  scan.initial_state = state;
  scan.lengths = Tensor();
  ScanOutputs result = ref::selective_scan_forward(scan);
  state.copy_from(result.last_state);
  return result.out.view({batch, dim});
}

}  // namespace mamba::ops::ref

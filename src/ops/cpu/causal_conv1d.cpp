#include "ops/causal_conv1d.h"

#include <algorithm>
#include <vector>

#include "core/threads.h"
#include "ops/cpu/conv_step.h"
#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

namespace {

// Everything the sequence kernels read, as float32 and in the layouts they want.
struct ConvProblem {
  int64_t batch, L, C, K;
  const float* x;
  std::vector<float> weight_t;  // [K, C]: tap k of every channel is contiguous
  std::vector<float> bias;      // [C] (zeros when absent)
  std::vector<float> history;   // [batch, K−1, C]: inputs before position 0 (initial state or 0)
  std::vector<int64_t> length;  // [batch]
  bool silu;

  // Row of inputs at position p ∈ [−(K−1), L) of sequence b.
  const float* input_row(int64_t b, int64_t p) const {
    return p >= 0 ? x + (b * L + p) * C : history.data() + (b * (K - 1) + (K - 1 + p)) * C;
  }
};

ConvProblem prepare(const ConvInputs& in) {
  check_conv_inputs(in);
  check_f32_activation(in.x, "conv input x");
  check_float_weight(in.weight, "conv weight");
  if (in.bias.defined()) check_float_weight(in.bias, "conv bias");
  if (in.initial_state.defined()) check_f32_activation(in.initial_state, "conv initial_state");
  ConvProblem p;
  p.batch = in.x.size(0);
  p.L = in.x.size(1);
  p.C = in.x.size(2);
  p.K = in.weight.size(-1);
  p.x = in.x.data<float>();
  p.silu = in.silu;
  const int64_t C = p.C, K = p.K;
  Tensor w = parameter_as_f32(in.weight);
  p.weight_t.resize(size_t(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) p.weight_t[size_t(k * C + c)] = w.data<float>()[c * K + k];
  p.bias.assign(size_t(C), 0.0f);
  if (in.bias.defined()) {
    Tensor b = parameter_as_f32(in.bias);
    std::copy(b.data<float>(), b.data<float>() + C, p.bias.begin());
  }
  p.history.assign(size_t(p.batch * (K - 1) * C), 0.0f);
  if (in.initial_state.defined()) {
    const float* s = in.initial_state.data<float>();
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < K - 1; ++j) p.history[size_t((b * (K - 1) + j) * C + c)] = s[(b * C + c) * (K - 1) + j];
  }
  p.length.assign(size_t(p.batch), p.L);
  if (in.lengths.defined())
    for (int64_t b = 0; b < p.batch; ++b) p.length[size_t(b)] = in.lengths.data<int32_t>()[b];
  return p;
}

// pre[c] = bias[c] + Σ_k w[c, k]·x_{t−K+1+k}[c] for position t of sequence b.
void preactivation(const ConvProblem& p, int64_t b, int64_t t, float* pre) {
  std::copy(p.bias.begin(), p.bias.end(), pre);
  for (int64_t k = 0; k < p.K; ++k) {
    const float* src = p.input_row(b, t - p.K + 1 + k);
    const float* w = p.weight_t.data() + k * p.C;
    for (int64_t c = 0; c < p.C; ++c) pre[c] += w[c] * src[c];
  }
}

// Positions are independent: split the flattened (batch, position) range; at least a few
// positions per range so small problems are not spread over threads for nothing.
int position_ranges(const ConvProblem& p) { return int(std::max<int64_t>(1, p.batch * p.L * p.C / 4096)); }

}  // namespace

ConvOutputs causal_conv1d_forward(const ConvInputs& in) {
  const ConvProblem p = prepare(in);
  const int64_t C = p.C, K = p.K;
  ConvOutputs o;
  o.out = Tensor::empty({p.batch, p.L, C}, DType::f32);
  o.final_state = Tensor::empty({p.batch, C, K - 1}, DType::f32);
  float* out = o.out.data<float>();
  parallel_for(p.batch * p.L, position_ranges(p), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / p.L, t = i % p.L;
      float* y = out + i * C;
      if (t >= p.length[size_t(b)]) {
        std::fill(y, y + C, 0.0f);
        continue;
      }
      preactivation(p, b, t, y);
      if (p.silu) silu_inplace(y, C);
    }
  });
  float* state = o.final_state.data<float>();
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t j = 0; j < K - 1; ++j) {
      const float* src = p.input_row(b, p.length[size_t(b)] - (K - 1) + j);
      for (int64_t c = 0; c < C; ++c) state[(b * C + c) * (K - 1) + j] = src[c];
    }
  return o;
}

ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout, Tensor* dweight_into, Tensor* dbias_into) {
  const ConvProblem p = prepare(in);
  check_shape(dout, in.x.shape(), "conv output gradient");
  check_f32_activation(dout, "conv output gradient");
  const int64_t C = p.C, K = p.K, positions = p.batch * p.L;
  const float* dy = dout.data<float>();

  // Pass 1: gradient of the pre-activation (0 past each sequence's length).
  std::vector<float> dpre(size_t(positions * C));
  parallel_for(positions, position_ranges(p), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / p.L, t = i % p.L;
      float* g = dpre.data() + i * C;
      if (t >= p.length[size_t(b)]) {
        std::fill(g, g + C, 0.0f);
        continue;
      }
      if (!p.silu) {
        std::copy(dy + i * C, dy + (i + 1) * C, g);
        continue;
      }
      preactivation(p, b, t, g);
      for (int64_t c = 0; c < C; ++c) {
        float sig = sigmoid(g[c]);
        g[c] = dy[i * C + c] * sig * (1.0f + g[c] * (1.0f - sig));
      }
    }
  });
  // dpre at position t of sequence b, or null past the end.
  auto dpre_row = [&](int64_t b, int64_t t) { return t < p.L ? dpre.data() + (b * p.L + t) * C : nullptr; };

  // Pass 2: dx[p] = Σ_k w[:, k]·dpre[p + K−1−k]; dweight per range in double, combined in order.
  ConvGrads g;
  g.dx = Tensor::empty(in.x.shape(), DType::f32);
  float* dx = g.dx.data<float>();
  const int ranges = num_threads();
  std::vector<double> dw_part(size_t(ranges * K * C), 0.0);
  parallel_for(positions, position_ranges(p), [&](int64_t i0, int64_t i1, int range) {
    double* dw = dw_part.data() + range * K * C;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / p.L, t = i % p.L;
      float* d = dx + i * C;
      std::fill(d, d + C, 0.0f);
      const float* gt = dpre_row(b, t);
      for (int64_t k = 0; k < K; ++k) {
        const float* w = p.weight_t.data() + k * C;
        if (const float* later = dpre_row(b, t + K - 1 - k))
          for (int64_t c = 0; c < C; ++c) d[c] += w[c] * later[c];
        const float* src = p.input_row(b, t - K + 1 + k);
        double* dwk = dw + k * C;
        for (int64_t c = 0; c < C; ++c) dwk[c] += double(gt[c] * src[c]);
      }
    }
  });
  if (!dweight_into) g.dweight = Tensor::zeros(in.weight.shape(), DType::f32);
  float* dweight = (dweight_into ? *dweight_into : g.dweight).data<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) {
      double sum = 0;
      for (int r = 0; r < ranges; ++r) sum += dw_part[size_t((r * K + k) * C + c)];
      dweight[c * K + k] += float(sum);
    }
  if (in.bias.defined()) {
    if (!dbias_into) g.dbias = Tensor::zeros({C}, DType::f32);
    add_column_sums(dpre.data(), positions, C, (dbias_into ? *dbias_into : g.dbias).data<float>());
  }
  if (in.initial_state.defined()) {
    // Slot j of the initial state is position j − (K−1); tap k of output t = j − k reads it.
    g.dinitial_state = Tensor::zeros({p.batch, C, K - 1}, DType::f32);
    float* ds = g.dinitial_state.data<float>();
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t j = 0; j < K - 1; ++j)
        for (int64_t k = 0; k < K; ++k) {
          const float* later = j - k >= 0 ? dpre_row(b, j - k) : nullptr;
          if (!later) continue;
          for (int64_t c = 0; c < C; ++c) ds[(b * C + c) * (K - 1) + j] += p.weight_t[size_t(k * C + c)] * later[c];
        }
  }
  return g;
}

namespace {

// Rows i0..i1 of the conv step, before SiLU: y[i] = bias[c] + Σ_k w[c, k]·window_k with the
// state shifted by one; the width is kWidth when that is nonzero, else `width`.
template <int kWidth>
void conv_step_rows(int64_t i0, int64_t i1, int64_t C, const float* x, const float* w, const float* bias, float* state,
                    float* y, int64_t width = kWidth) {
  const int64_t K = kWidth ? kWidth : width;
  for (int64_t i = i0; i < i1;) {
    // The channels of row i / C that lie in [i, i1): a loop without a division per channel.
    const int64_t c0 = i % C, c1 = std::min(C, c0 + (i1 - i)), row = i - c0;
    const float* xr = x + row;
    float* sr = state + row * (K - 1);
    float* yr = y + row;
    for (int64_t c = c0; c < c1; ++c) {
      float* s = sr + c * (K - 1);
      const float* wc = w + c * K;
      float acc = (bias ? bias[c] : 0.0f) + wc[K - 1] * xr[c];
      for (int64_t k = 0; k < K - 1; ++k) acc += wc[k] * s[k];
      for (int64_t k = 0; k + 1 < K - 1; ++k) s[k] = s[k + 1];
      if (K > 1) s[K - 2] = xr[c];
      yr[c] = acc;
    }
    i = row + c1;
  }
}

// Rows i0..i1 of the conv step (rows as in conv_step_rows), then SiLU when asked.
void conv_step_items(int64_t i0, int64_t i1, int64_t C, int64_t K, const float* x, const float* w, const float* bias,
                     float* state, float* y, bool silu) {
  if (K == 4)  // every Mamba checkpoint: a fixed width lets the compiler vectorise over channels
    conv_step_rows<4>(i0, i1, C, x, w, bias, state, y);
  else
    conv_step_rows<0>(i0, i1, C, x, w, bias, state, y, K);
  // One vectorised pass: a scalar exp per channel was most of the step's time.
  if (silu) silu_inplace(y + i0, i1 - i0);
}

}  // namespace

void conv_step_channels(const ConvStepPointers& p, int64_t c0, int64_t c1) {
  for (int64_t b = 0; b < p.batch; ++b)
    conv_step_items(b * p.channels + c0, b * p.channels + c1, p.channels, p.width, p.x, p.weight, p.bias, p.state, p.y,
                    p.silu);
}

Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state) {
  check_conv_step_inputs(step, state);
  check_f32_activation(step.x, "conv step input x");
  check_f32_activation(state, "conv state");
  check_float_weight(step.weight, "conv weight");
  if (step.bias.defined()) check_float_weight(step.bias, "conv bias");
  const int64_t batch = step.x.size(0), C = step.x.size(1), K = step.weight.size(-1);
  Tensor w = parameter_as_f32(step.weight), bias = parameter_as_f32(step.bias);
  const float *x = step.x.data<float>(), *wp = w.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  float* st = state.data<float>();
  Tensor out = Tensor::empty({batch, C}, DType::f32);
  float* y = out.data<float>();
  const int max_ranges = int(std::max<int64_t>(1, batch * C / 4096));
  parallel_for(batch * C, max_ranges,
               [&](int64_t i0, int64_t i1, int) { conv_step_items(i0, i1, C, K, x, wp, bp, st, y, step.silu); });
  return out;
}

}  // namespace mamba::ops::cpu

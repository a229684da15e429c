#include "ops/norm.h"

#include <cmath>
#include <vector>

#include "core/threads.h"
#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

NormOutputs add_norm_forward(const NormInputs& in) {
  check_norm_inputs(in);
  check_f32_activation(in.x, "norm input x");
  if (in.residual.defined()) check_f32_activation(in.residual, "norm residual");
  check_float_weight(in.weight, "norm weight");
  if (in.bias.defined()) check_float_weight(in.bias, "norm bias");
  const bool layer = in.kind == NormKind::layer;
  const int64_t d = in.x.size(-1), M = d == 0 ? 0 : in.x.numel() / d;
  Tensor weight = parameter_as_f32(in.weight), bias = parameter_as_f32(in.bias);

  NormOutputs o;
  o.out = Tensor::empty(in.x.shape(), DType::f32);
  o.residual_out = Tensor::empty(in.x.shape(), DType::f32);
  o.rstd = Tensor::empty({M}, DType::f32);
  if (layer) o.mean = Tensor::empty({M}, DType::f32);
  const float* x = in.x.data<float>();
  const float* residual = in.residual.defined() ? in.residual.data<float>() : nullptr;
  const float* w = weight.data<float>();
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  float *out = o.out.data<float>(), *s_all = o.residual_out.data<float>(), *rstd = o.rstd.data<float>();
  float* mean = layer ? o.mean.data<float>() : nullptr;

  parallel_for(M, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * d;
      float* s = s_all + r * d;
      float* y = out + r * d;
      if (residual) {
        const float* res = residual + r * d;
        for (int64_t i = 0; i < d; ++i) s[i] = xr[i] + res[i];
      } else {
        std::copy(xr, xr + d, s);
      }
      float mu = 0;
      if (layer) mu = float(blocked_sum(d, [&](int64_t i) { return s[i]; }) / double(d));
      double second_moment = blocked_sum(d, [&](int64_t i) { return (s[i] - mu) * (s[i] - mu); }) / double(d);
      float inv = float(1.0 / std::sqrt(second_moment + double(in.eps)));
      rstd[r] = inv;
      if (layer) mean[r] = mu;
      for (int64_t i = 0; i < d; ++i) y[i] = (s[i] - mu) * inv * w[i] + (b ? b[i] : 0.0f);
    }
  });
  return o;
}

NormGrads add_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                            const Tensor& dresidual_out, Tensor* dweight_into, Tensor* dbias_into) {
  check_norm_inputs(in);
  check_f32_activation(dout, "norm output gradient");
  check_f32_activation(saved.residual_out, "norm saved residual_out");
  check_f32_activation(saved.rstd, "norm saved rstd");
  if (dresidual_out.defined()) check_f32_activation(dresidual_out, "norm residual_out gradient");
  const bool layer = in.kind == NormKind::layer;
  if (layer) check_f32_activation(saved.mean, "norm saved mean");
  const int64_t d = in.x.size(-1), M = d == 0 ? 0 : in.x.numel() / d;
  Tensor weight = parameter_as_f32(in.weight);
  const bool with_bias = in.bias.defined();

  NormGrads g;
  g.ds = Tensor::empty(in.x.shape(), DType::f32);
  if (!dweight_into) g.dweight = Tensor::zeros({d}, DType::f32);
  if (with_bias && !dbias_into) g.dbias = Tensor::zeros({d}, DType::f32);
  const float *w = weight.data<float>(), *dy = dout.data<float>(), *s_all = saved.residual_out.data<float>();
  const float* rstd = saved.rstd.data<float>();
  const float* mean = layer ? saved.mean.data<float>() : nullptr;
  const float* dres = dresidual_out.defined() ? dresidual_out.data<float>() : nullptr;
  float* ds_all = g.ds.data<float>();

  // dweight/dbias: one double partial per range, combined in range order (deterministic).
  const int ranges = num_threads();
  std::vector<double> dw_part(size_t(ranges * d), 0.0), db_part(with_bias ? size_t(ranges * d) : 0, 0.0);
  parallel_for(M, [&](int64_t r0, int64_t r1, int range) {
    double* dw = dw_part.data() + range * d;
    double* db = with_bias ? db_part.data() + range * d : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const float *s = s_all + r * d, *gy = dy + r * d;
      float* ds = ds_all + r * d;
      const float inv = rstd[r], mu = layer ? mean[r] : 0.0f;
      auto xhat = [&](int64_t i) { return (s[i] - mu) * inv; };
      // ds = inv·(g⊙w − mean(g⊙w)·[LayerNorm] − x̂·mean(g⊙w⊙x̂)), x̂ the normalised row.
      float gw_mean = layer ? float(blocked_sum(d, [&](int64_t i) { return gy[i] * w[i]; }) / double(d)) : 0.0f;
      float gwx_mean = float(blocked_sum(d, [&](int64_t i) { return gy[i] * w[i] * xhat(i); }) / double(d));
      for (int64_t i = 0; i < d; ++i) {
        ds[i] = inv * (gy[i] * w[i] - gw_mean - xhat(i) * gwx_mean) + (dres ? dres[r * d + i] : 0.0f);
        dw[i] += double(gy[i] * xhat(i));
      }
      if (db)
        for (int64_t i = 0; i < d; ++i) db[i] += gy[i];
    }
  });
  float* dw_out = (dweight_into ? *dweight_into : g.dweight).data<float>();
  for (int64_t i = 0; i < d; ++i) {
    double sum = 0;
    for (int range = 0; range < ranges; ++range) sum += dw_part[size_t(range * d + i)];
    dw_out[i] += float(sum);
  }
  if (with_bias) {
    float* db_out = (dbias_into ? *dbias_into : g.dbias).data<float>();
    for (int64_t i = 0; i < d; ++i) {
      double sum = 0;
      for (int range = 0; range < ranges; ++range) sum += db_part[size_t(range * d + i)];
      db_out[i] += float(sum);
    }
  }
  g.dx = g.ds;  // x is float32 here
  return g;
}

}  // namespace mamba::ops::cpu

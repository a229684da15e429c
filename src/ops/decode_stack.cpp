#include "ops/decode_stack.h"

#include <string>

#include "ops/dispatch.h"

namespace mamba::ops {

namespace {
// The stack's geometry from layer 0; every layer must agree with it.
void check_layers(const Tensor& x, const std::vector<DecodeStackLayer>& layers) {
  MAMBA_CHECK(x.defined() && x.ndim() == 2 && x.size(0) >= 1, "decode_stack_step x: expected [rows, d]",
              x.defined() ? ", got " + shape_string(x.shape()) : std::string(" (missing)"));
  const int64_t rows = x.size(0);
  MAMBA_CHECK(!layers.empty(), "decode_stack_step: no layers");
  const int64_t d = x.size(1), E = layers[0].dt_bias.defined() ? layers[0].dt_bias.size(0) : 0;
  const int64_t N = layers[0].A.defined() ? layers[0].A.size(-1) : 0;
  const int64_t R = layers[0].dt_proj.defined() ? layers[0].dt_proj.size(-1) : 0;
  const int64_t K = layers[0].conv_weight.defined() ? layers[0].conv_weight.size(-1) : 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const DecodeStackLayer& L = layers[l];
    const std::string at = "decode_stack_step layer " + std::to_string(l) + " ";
    auto shape = [&](const Tensor& t, std::vector<int64_t> expected, const char* name) {
      check_shape(t, expected, (at + name).c_str());
      check_device(t, x.device(), (at + name).c_str());
    };
    shape(L.norm_weight, {d}, "norm weight");
    shape(L.in_proj, {2 * E, d}, "in_proj weight");
    shape(L.conv_weight.defined() ? L.conv_weight.view({L.conv_weight.size(0), L.conv_weight.size(-1)}) : Tensor(),
          {E, K}, "conv weight");
    if (L.conv_bias.defined()) shape(L.conv_bias, {E}, "conv bias");
    MAMBA_CHECK(L.x_proj.defined() && L.x_proj.ndim() == 3 && L.x_proj.size(1) == R + 2 * N &&
                    L.x_proj.size(0) * L.x_proj.size(2) == E,
                at, "x_proj weight: expected [blocks, ", R + 2 * N, ", ", E, " / blocks] (decode_stack_x_proj_blocks)",
                L.x_proj.defined() ? ", got " + shape_string(L.x_proj.shape()) : std::string(" (missing)"));
    check_device(L.x_proj, x.device(), (at + "x_proj weight").c_str());
    shape(L.dt_proj, {E, R}, "dt_proj weight");
    shape(L.dt_bias, {E}, "dt_proj bias");
    shape(L.A, {E, N}, "A");
    shape(L.D, {E}, "D");
    shape(L.out_proj, {d, E}, "out_proj weight");
    shape(L.conv_state, {rows, E, K - 1}, "conv state");
    shape(L.ssm_state, {rows, E, N}, "ssm state");
    check_dtype(L.conv_state, DType::f32, (at + "conv state").c_str());
    check_dtype(L.ssm_state, DType::f32, (at + "ssm state").c_str());
  }
}
}  // namespace

Tensor decode_stack_x_proj_blocks(const Tensor& x_proj, int64_t d) {
#ifdef MAMBACPP_CUDA
  if (x_proj.defined() && x_proj.device() == Device::cuda) return cuda::decode_stack_x_proj_blocks(x_proj, d);
#endif
  (void)d;
  return {};
}

bool decode_stack_fits(const Tensor& x, const std::vector<DecodeStackLayer>& layers) {
  check_layers(x, layers);
#ifdef MAMBACPP_CUDA
  return x.device() == Device::cuda && cuda::decode_stack_fits(x, layers);
#else
  return false;
#endif
}

bool decode_stack_pays(const Tensor& x, const std::vector<DecodeStackLayer>& layers) {
#ifdef MAMBACPP_CUDA
  return decode_stack_fits(x, layers) && cuda::decode_stack_pays(x, layers);
#else
  return false;
#endif
}

std::optional<DecodeStackOutputs> decode_stack_step(const Tensor& x, const std::vector<DecodeStackLayer>& layers,
                                                    float eps) {
  if (!decode_stack_fits(x, layers)) return std::nullopt;
#ifdef MAMBACPP_CUDA
  return cuda::decode_stack_step(x, layers, eps);
#else
  return std::nullopt;
#endif
}

}  // namespace mamba::ops

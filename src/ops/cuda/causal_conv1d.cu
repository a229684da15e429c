// CUDA causal depthwise conv1d: forward, backward and the one-token step.
//
// Channels are the fastest axis of the token-major layout, so one thread per (position, channel)
// reads its K inputs coalesced across the warp (neighbouring positions hit the cache). The
// backward first forms dpre = dout·SiLU'(pre) once per element in float32, then gathers dx from
// it; weight and bias gradients are per-channel sums over all rows, reduced per block in shared
// memory and added with one atomic per block and weight.
#include "ops/causal_conv1d.h"
#include "ops/cuda/common.cuh"

namespace mamba::ops {
namespace {
using namespace cuda_detail;

constexpr int kMaxWidth = 8;

struct ConvArgs {
  const void* x = nullptr;
  const float* weight = nullptr;  // [C, K] float32
  const float* bias = nullptr;
  const float* initial_state = nullptr;  // [batch, C, K−1]
  const int32_t* lengths = nullptr;
  int batch = 0, L = 0, channels = 0, width = 0;
  bool silu = true;
};

__device__ __forceinline__ int sequence_length(const ConvArgs& p, int b) {
  return p.lengths ? max(0, min(p.lengths[b], p.L)) : p.L;
}

// Input at position t (negative: from the initial state, or 0).
template <typename T>
__device__ __forceinline__ float conv_input(const ConvArgs& p, const T* x_seq, int b, int t, int c) {
  if (t >= 0) return to_float(x_seq[int64_t(t) * p.channels + c]);
  const int j = t + p.width - 1;
  return p.initial_state && j >= 0 ? p.initial_state[(int64_t(b) * p.channels + c) * (p.width - 1) + j] : 0.0f;
}

template <typename T>
__device__ __forceinline__ float pre_activation(const ConvArgs& p, const T* x_seq, int b, int t, int c) {
  float acc = p.bias ? p.bias[c] : 0.0f;
  for (int k = 0; k < p.width; ++k)
    acc = fmaf(p.weight[c * p.width + k], conv_input(p, x_seq, b, t - p.width + 1 + k, c), acc);
  return acc;
}

template <typename T>
__global__ void conv_forward_kernel(ConvArgs p, T* out) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= int64_t(p.batch) * p.L * p.channels) return;
  const int c = index % p.channels;
  const int t = (index / p.channels) % p.L;
  const int b = index / (int64_t(p.channels) * p.L);
  const T* x_seq = static_cast<const T*>(p.x) + int64_t(b) * p.L * p.channels;
  float v = 0.0f;
  if (t < sequence_length(p, b)) {
    v = pre_activation(p, x_seq, b, t, c);
    if (p.silu) v *= sigmoid(v);
  }
  out[index] = from_float<T>(v);
}

// final_state[b, c, j] = input at position len − (K−1) + j.
template <typename T>
__global__ void conv_final_state_kernel(ConvArgs p, float* final_state) {
  const int history = p.width - 1;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= int64_t(p.batch) * p.channels * history) return;
  const int j = index % history;
  const int c = (index / history) % p.channels;
  const int b = index / (int64_t(history) * p.channels);
  const T* x_seq = static_cast<const T*>(p.x) + int64_t(b) * p.L * p.channels;
  final_state[index] = conv_input(p, x_seq, b, sequence_length(p, b) - history + j, c);
}

template <typename T>
__global__ void conv_dpre_kernel(ConvArgs p, const T* dout, float* dpre) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= int64_t(p.batch) * p.L * p.channels) return;
  const int c = index % p.channels;
  const int t = (index / p.channels) % p.L;
  const int b = index / (int64_t(p.channels) * p.L);
  const T* x_seq = static_cast<const T*>(p.x) + int64_t(b) * p.L * p.channels;
  float g = 0.0f;
  if (t < sequence_length(p, b)) {
    g = to_float(dout[index]);
    if (p.silu) {
      const float v = pre_activation(p, x_seq, b, t, c), s = sigmoid(v);
      g *= s * fmaf(v, 1.0f - s, 1.0f);
    }
  }
  dpre[index] = g;
}

// dx[t] = Σ_k w[k]·dpre[t + K−1−k]; dinitial_state[j] likewise for the virtual positions j − (K−1).
template <typename T>
__global__ void conv_dx_kernel(ConvArgs p, const float* dpre, T* dx, float* dinitial_state) {
  const int history = p.width - 1;
  const int64_t body = int64_t(p.batch) * p.L * p.channels;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int b, t, c;
  if (index < body) {
    c = index % p.channels;
    t = (index / p.channels) % p.L;
    b = index / (int64_t(p.channels) * p.L);
  } else {
    const int64_t k = index - body;
    if (!dinitial_state || k >= int64_t(p.batch) * p.channels * history) return;
    t = k % history - history;
    c = (k / history) % p.channels;
    b = k / (int64_t(history) * p.channels);
  }
  const float* dpre_seq = dpre + int64_t(b) * p.L * p.channels;
  float acc = 0.0f;
  for (int k = 0; k < p.width; ++k) {
    const int s = t + p.width - 1 - k;
    if (s >= 0 && s < p.L) acc = fmaf(p.weight[c * p.width + k], dpre_seq[int64_t(s) * p.channels + c], acc);
  }
  if (index < body)
    dx[index] = from_float<T>(acc);
  else
    dinitial_state[(int64_t(b) * p.channels + c) * history + t + history] = acc;
}

// Block: 32 channels × 8 row lanes over a range of rows (b, t); sums dpre·input and dpre.
template <typename T>
__global__ void conv_dweight_kernel(ConvArgs p, const float* dpre, int rows_per_block, float* dweight, float* dbias) {
  __shared__ float partial[8][32][kMaxWidth + 1];
  const int cx = threadIdx.x % 32, ry = threadIdx.x / 32;
  const int c = blockIdx.x * 32 + cx;
  const int64_t rows = int64_t(p.batch) * p.L;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_block, r1 = min(rows, r0 + rows_per_block);
  float acc[kMaxWidth + 1] = {};
  if (c < p.channels) {
    for (int64_t r = r0 + ry; r < r1; r += 8) {
      const int b = r / p.L, t = r % p.L;
      const float g = dpre[r * p.channels + c];
      if (g == 0.0f) continue;
      const T* x_seq = static_cast<const T*>(p.x) + int64_t(b) * p.L * p.channels;
#pragma unroll
      for (int k = 0; k < kMaxWidth; ++k)
        if (k < p.width) acc[k] = fmaf(g, conv_input(p, x_seq, b, t - p.width + 1 + k, c), acc[k]);
      acc[kMaxWidth] += g;
    }
  }
#pragma unroll
  for (int k = 0; k <= kMaxWidth; ++k) partial[ry][cx][k] = acc[k];
  __syncthreads();
  if (ry == 0 && c < p.channels) {
    for (int k = 0; k <= kMaxWidth; ++k) {
      if (k < kMaxWidth && k >= p.width) continue;
      float sum = 0.0f;
      for (int j = 0; j < 8; ++j) sum += partial[j][cx][k];
      if (k < kMaxWidth)
        atomicAdd(dweight + c * p.width + k, sum);
      else if (dbias)
        atomicAdd(dbias + c, sum);
    }
  }
}

template <typename T>
__global__ void conv_step_kernel(ConvArgs p, float* state, T* out) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= int64_t(p.batch) * p.channels) return;
  const int c = index % p.channels, history = p.width - 1;
  float* s = state + index * history;
  const float x = to_float(static_cast<const T*>(p.x)[index]);
  float acc = p.bias ? p.bias[c] : 0.0f;
  for (int k = 0; k < history; ++k) acc = fmaf(p.weight[c * p.width + k], s[k], acc);
  acc = fmaf(p.weight[c * p.width + history], x, acc);
  for (int k = 0; k + 1 < history; ++k) s[k] = s[k + 1];
  if (history > 0) s[history - 1] = x;
  if (p.silu) acc *= sigmoid(acc);
  out[index] = from_float<T>(acc);
}

// Float32 copies of the weights stay alive with the args that point at them.
struct Prepared {
  ConvArgs args;
  Tensor weight, bias;
};

Prepared prepare(const ConvInputs& in, bool step) {
  require_cuda_tensor(in.x, "causal_conv1d x");
  MAMBA_CHECK(in.x.dtype() == DType::f32 || in.x.dtype() == DType::bf16,
              "causal_conv1d (cuda): x must be f32 or bf16, got ", dtype_name(in.x.dtype()));
  MAMBA_CHECK(in.x.ndim() == (step ? 2 : 3), "causal_conv1d x: expected ", step ? "[batch, C]" : "[batch, L, C]",
              ", got ", shape_string(in.x.shape()));
  require_cuda_tensor(in.weight, "causal_conv1d weight");
  MAMBA_CHECK(in.weight.ndim() == 2 && in.weight.size(0) == in.x.size(-1), "causal_conv1d weight: expected [",
              in.x.size(-1), ", K], got ", shape_string(in.weight.shape()));
  Prepared prepared;
  ConvArgs& p = prepared.args;
  p.batch = int(in.x.size(0));
  p.L = step ? 1 : int(in.x.size(1));
  p.channels = int(in.x.size(-1));
  p.width = int(in.weight.size(1));
  MAMBA_CHECK(p.width >= 1 && p.width <= kMaxWidth, "causal_conv1d weight: kernel width ", p.width,
              " not supported on cuda (1..", kMaxWidth, ")");
  p.silu = in.silu;
  prepared.weight = float32_on_device(in.weight, "causal_conv1d weight");
  p.weight = prepared.weight.data<float>();
  if (in.bias.defined()) {
    check_shape(in.bias, {p.channels}, "causal_conv1d bias");
    prepared.bias = float32_on_device(in.bias, "causal_conv1d bias");
    p.bias = prepared.bias.data<float>();
  }
  if (!step && in.initial_state.defined()) {
    require_cuda_tensor(in.initial_state, "causal_conv1d initial_state");
    check_shape(in.initial_state, {p.batch, p.channels, p.width - 1}, "causal_conv1d initial_state");
    check_dtype(in.initial_state, DType::f32, "causal_conv1d initial_state");
    p.initial_state = in.initial_state.data<float>();
  }
  if (!step && in.lengths.defined()) {
    require_cuda_tensor(in.lengths, "causal_conv1d lengths");
    check_shape(in.lengths, {p.batch}, "causal_conv1d lengths");
    check_dtype(in.lengths, DType::i32, "causal_conv1d lengths");
    p.lengths = in.lengths.data<int32_t>();
  }
  p.x = in.x.raw();
  return prepared;
}

template <typename T>
void forward(const ConvArgs& p, ConvOutputs& out) {
  const int64_t n = int64_t(p.batch) * p.L * p.channels;
  if (n > 0) conv_forward_kernel<T><<<blocks_for(n, 256), 256>>>(p, static_cast<T*>(out.out.raw()));
  const int64_t states = int64_t(p.batch) * p.channels * (p.width - 1);
  if (states > 0) conv_final_state_kernel<T><<<blocks_for(states, 256), 256>>>(p, out.final_state.data<float>());
  check_launch("causal_conv1d forward");
}

template <typename T>
void backward(const ConvArgs& p, const Tensor& dout, ConvGrads& g) {
  const int64_t n = int64_t(p.batch) * p.L * p.channels;
  Tensor dpre = Tensor::empty({n}, DType::f32, Device::cuda);
  if (n > 0) conv_dpre_kernel<T><<<blocks_for(n, 256), 256>>>(p, static_cast<const T*>(dout.raw()), dpre.data<float>());
  float* dinit = g.dinitial_state.defined() ? g.dinitial_state.data<float>() : nullptr;
  const int64_t total = n + (dinit ? int64_t(p.batch) * p.channels * (p.width - 1) : 0);
  if (total > 0)
    conv_dx_kernel<T><<<blocks_for(total, 256), 256>>>(p, dpre.data<float>(), static_cast<T*>(g.dx.raw()), dinit);
  const int64_t rows = int64_t(p.batch) * p.L;
  if (rows > 0) {
    const int rows_per_block = 256;
    const dim3 grid((p.channels + 31) / 32, unsigned((rows + rows_per_block - 1) / rows_per_block));
    conv_dweight_kernel<T><<<grid, 256>>>(p, dpre.data<float>(), rows_per_block, g.dweight.data<float>(),
                                          g.dbias.defined() ? g.dbias.data<float>() : nullptr);
  }
  check_launch("causal_conv1d backward");
}

}  // namespace

namespace cuda {

ConvOutputs causal_conv1d_forward(const ConvInputs& in) {
  Prepared prepared = prepare(in, false);
  const ConvArgs& p = prepared.args;
  ConvOutputs out;
  out.out = Tensor::empty(in.x.shape(), in.x.dtype(), Device::cuda);
  out.final_state = Tensor::empty({p.batch, p.channels, p.width - 1}, DType::f32, Device::cuda);
  if (in.x.dtype() == DType::f32)
    forward<float>(p, out);
  else
    forward<__nv_bfloat16>(p, out);
  return out;
}

ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout) {
  Prepared prepared = prepare(in, false);
  const ConvArgs& p = prepared.args;
  require_cuda_tensor(dout, "causal_conv1d dout");
  check_shape(dout, in.x.shape(), "causal_conv1d dout");
  check_dtype(dout, in.x.dtype(), "causal_conv1d dout");
  ConvGrads g;
  g.dx = Tensor::empty(in.x.shape(), in.x.dtype(), Device::cuda);
  g.dweight = Tensor::zeros(in.weight.shape(), DType::f32, Device::cuda);
  if (in.bias.defined()) g.dbias = Tensor::zeros({p.channels}, DType::f32, Device::cuda);
  if (in.initial_state.defined())
    g.dinitial_state = Tensor::empty({p.batch, p.channels, p.width - 1}, DType::f32, Device::cuda);
  if (in.x.dtype() == DType::f32)
    backward<float>(p, dout, g);
  else
    backward<__nv_bfloat16>(p, dout, g);
  return g;
}

Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state) {
  Prepared prepared = prepare(step, true);
  const ConvArgs& p = prepared.args;
  require_cuda_tensor(state, "causal_conv1d_step state");
  check_shape(state, {p.batch, p.channels, p.width - 1}, "causal_conv1d_step state");
  check_dtype(state, DType::f32, "causal_conv1d_step state");
  Tensor out = Tensor::empty(step.x.shape(), step.x.dtype(), Device::cuda);
  const int64_t n = int64_t(p.batch) * p.channels;
  if (n == 0) return out;
  if (step.x.dtype() == DType::f32)
    conv_step_kernel<float><<<blocks_for(n, 256), 256>>>(p, state.data<float>(), static_cast<float*>(out.raw()));
  else
    conv_step_kernel<__nv_bfloat16>
        <<<blocks_for(n, 256), 256>>>(p, state.data<float>(), static_cast<__nv_bfloat16*>(out.raw()));
  check_launch("causal_conv1d step");
  return out;
}

}  // namespace cuda
}  // namespace mamba::ops

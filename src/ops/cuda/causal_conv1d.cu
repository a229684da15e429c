// CUDA causal depthwise conv1d: forward, backward and the one-token step.
//
// Forward and backward: a thread owns one or two channels of one sequence over a segment of kSegment
// consecutive positions and slides a window of the last K inputs (and, backward, the next K
// dpre values) along it in registers, so each element is read about once; a warp covers 32
// neighbouring channels, so every load is coalesced across it. The backward forms
// dpre = dout·SiLU'(pre) as it goes, emits dx K−1 positions behind, and sums the weight and bias
// gradients over its segment; a block adds its segments' sums before one atomic per weight. No
// integer division per element. Loads are issued kLoadBatch positions at a time, before any of them
// is used, so each thread has several in flight.
#include <initializer_list>
#include <type_traits>

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

constexpr int kSegment = 64;  // positions per thread
constexpr int kBlockChannels = 128;
constexpr int kLoadBatch = 8;  // positions whose loads are in flight together

// The segment kernels take the kernel width K as a compile-time constant when it is Mamba's 4
// (kFixedWidth = 4; 0: K from the arguments, registers for kMaxWidth taps). Then the per-tap
// guards fold and, with the positions of a load batch unrolled, the window shifts become register
// renaming: with a run-time K they were predicated moves and FMAs over 8 taps per position, and
// the kernels were bound by instruction issue, not memory.
constexpr int kFastWidth = 4;
__host__ __device__ constexpr int register_width(int fixed_width) { return fixed_width > 0 ? fixed_width : kMaxWidth; }

// The backward's blocks: a warp of kWarpChannels threads (32 · kC neighbouring channels) per
// segment, kBackwardSegments consecutive segments a block, so the block sums its weight gradients
// over those segments before the atomics: one atomic per weight and segment was ≈ 1.3 M atomics onto
// 10 k addresses per 370m training layer, and summing four segments first took the 370m step's conv
// backward from 3.14 to 2.45 ms.
constexpr int kWarpChannels = 32;
constexpr int kBackwardSegments = 4;  // 8: no faster (2.45 → 2.44 ms)
const dim3 kBackwardBlock(kWarpChannels, kBackwardSegments);

// Launch shape of the segment kernels: x = channel blocks (`block_threads` threads of
// `channels_per_thread` channels each), y = groups of `segments_per_block` segments, z = sequences.
dim3 segment_grid(const ConvArgs& p, int block_threads, int channels_per_thread, int segments_per_block) {
  const int per_block = block_threads * channels_per_thread;
  const int segments = (p.L + kSegment - 1) / kSegment;
  return dim3(unsigned((p.channels + per_block - 1) / per_block),
              unsigned((segments + segments_per_block - 1) / segments_per_block), unsigned(p.batch));
}

// The taps, bias and starting window of channels c0 … c0 + kC − 1 for a walk that begins at
// position t: window[j][k] is the input of channel c0 + j at t − K + 1 + k (the last slot is filled
// as the walk reads t).
template <typename T, int kC, int kW>
__device__ __forceinline__ void load_taps_and_window(const ConvArgs& p, const T* x_seq, int b, int c0, int K, int t,
                                                     float (&w)[kC][kW], float (&bias)[kC], float (&window)[kC][kW]) {
#pragma unroll
  for (int j = 0; j < kC; ++j) {
#pragma unroll
    for (int k = 0; k < kW; ++k) {
      w[j][k] = k < K ? p.weight[(c0 + j) * K + k] : 0.0f;
      window[j][k] = k + 1 < K ? conv_input(p, x_seq, b, t - K + 1 + k, c0 + j) : 0.0f;
    }
    bias[j] = p.bias ? p.bias[c0 + j] : 0.0f;
  }
}

// kC: consecutive channels per thread (2 when the channel count is even and the rows aligned for
// it: 130m prefill at batch 16, 117 µs a layer at 0.85 TB/s with 2-byte loads, was bound by load
// instructions, not bytes).
// The last segment's blocks also write final_state (a kernel of its own was one more launch per
// layer in a prefill).
template <typename T, int kFixedWidth, int kC>
__global__ void conv_forward_kernel(ConvArgs p, T* out, float* final_state) {
  constexpr int kW = register_width(kFixedWidth);
  const int K = kFixedWidth > 0 ? kFixedWidth : p.width;
  const int c0 = (blockIdx.x * kBlockChannels + threadIdx.x) * kC, b = blockIdx.z;
  if (c0 >= p.channels) return;
  const int t0 = blockIdx.y * kSegment, t1 = min(p.L, t0 + kSegment), len = sequence_length(p, b);
  const T* x_seq = static_cast<const T*>(p.x) + int64_t(b) * p.L * p.channels;
  T* out_seq = out + int64_t(b) * p.L * p.channels;
  float w[kC][kW], window[kC][kW], bias[kC];  // window[j][k]: input of channel c0 + j at t − K + 1 + k
  load_taps_and_window<T, kC, kW>(p, x_seq, b, c0, K, t0, w, bias, window);
  for (int batch0 = t0; batch0 < t1; batch0 += kLoadBatch) {
    float xs[kLoadBatch][kC];
#pragma unroll
    for (int i = 0; i < kLoadBatch; ++i) {
      if (batch0 + i < t1) {
        load_packed<T, kC>(x_seq + int64_t(batch0 + i) * p.channels + c0, xs[i]);
      } else {
#pragma unroll
        for (int j = 0; j < kC; ++j) xs[i][j] = 0.0f;
      }
    }
#pragma unroll
    for (int i = 0; i < kLoadBatch; ++i) {
      const int t = batch0 + i;
      float v[kC];
#pragma unroll
      for (int j = 0; j < kC; ++j) {
        v[j] = bias[j];
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          if (k + 1 == K) window[j][k] = xs[i][j];
          if (k < K) v[j] = fmaf(w[j][k], window[j][k], v[j]);
        }
#pragma unroll
        for (int k = 0; k + 1 < kW; ++k)
          if (k + 1 < K) window[j][k] = window[j][k + 1];  // shift for the next position
        if (p.silu) v[j] *= sigmoid(v[j]);
        v[j] = t < len ? v[j] : 0.0f;
      }
      if (t < t1) store_packed<T, kC>(out_seq + int64_t(t) * p.channels + c0, v);
    }
  }
  if (blockIdx.y + 1 == gridDim.y) {
    const int history = K - 1;
#pragma unroll
    for (int j = 0; j < kC; ++j)
      for (int k = 0; k < history; ++k)
        final_state[(int64_t(b) * p.channels + c0 + j) * history + k] =
            conv_input(p, x_seq, b, len - history + k, c0 + j);
  }
}

// final_state[b, c, j] = input at position len − (K−1) + j; for L = 0 only (the forward kernel
// writes it otherwise).
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

// Backward of one segment [t0, t1) of kC consecutive channels: walks t from s_begin to t1 + K − 2,
// forming dpre[t] (0 past the length and before position 0) and, once dpre[s .. s+K−1] are known,
// dx[s] = Σ_k w[k]·dpre[s + K−1−k]; dx at the virtual positions −(K−1) … −1 goes to
// dinitial_state (first segment only). dweight[k] += dpre[t]·x[t−K+1+k] and dbias += dpre[t] for
// t in the segment, summed here into gw and gb. kC = 2 as in the forward: with 2-byte loads and
// stores (one channel a thread) the 370m and 1.4b training backward ran at half the memory rate.
template <typename T, int kFixedWidth, int kC>
__device__ __forceinline__ void backward_segment(const ConvArgs& p, const T* dout, T* dx, float* dinitial_state, int c0,
                                                 int b, int t0, float (&gw)[kC][register_width(kFixedWidth)],
                                                 float (&gb)[kC]) {
  constexpr int kW = register_width(kFixedWidth);
  const int K = kFixedWidth > 0 ? kFixedWidth : p.width, history = K - 1;
  const int t1 = min(p.L, t0 + kSegment), len = sequence_length(p, b);
  const int64_t offset = int64_t(b) * p.L * p.channels;
  const T* x_seq = static_cast<const T*>(p.x) + offset;
  const T* dout_seq = dout + offset;
  // Per channel j: window[j][k] the input at t − K + 1 + k (for pre[t]); recent[j][i] dpre at t − i.
  float w[kC][kW], bias[kC], window[kC][kW], recent[kC][kW] = {};
  const bool to_initial = dinitial_state && t0 == 0;
  const int s_begin = to_initial ? -history : t0;
  load_taps_and_window<T, kC, kW>(p, x_seq, b, c0, K, s_begin, w, bias, window);
  const int t_end = t1 + history;
  // One batch of kLoadBatch positions. Interior batches (every position inside the segment and the
  // sequence, with dx due at each) skip all per-position bounds: most of a segment is interior, and
  // with the bounds the kernel was bound by instruction issue, not memory.
  auto run_batch = [&](const int batch0, auto interior_tag) {
    constexpr bool kInterior = decltype(interior_tag)::value;
    float xs[kLoadBatch][kC], douts[kLoadBatch][kC];
#pragma unroll
    for (int i = 0; i < kLoadBatch; ++i) {
      const int t = batch0 + i;
      if (kInterior) {
        load_packed<T, kC>(x_seq + int64_t(t) * p.channels + c0, xs[i]);
        load_packed<T, kC>(dout_seq + int64_t(t) * p.channels + c0, douts[i]);
      } else {
#pragma unroll
        for (int j = 0; j < kC; ++j) {
          const int c = c0 + j;
          xs[i][j] = t < 0     ? conv_input(p, x_seq, b, t, c)
                     : t < p.L ? to_float(x_seq[int64_t(t) * p.channels + c])
                               : 0.0f;
          douts[i][j] = t >= 0 && t < len ? to_float(dout_seq[int64_t(t) * p.channels + c]) : 0.0f;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kLoadBatch; ++i) {
      const int t = batch0 + i;
      if (!kInterior && t >= t_end) break;  // dx past the segment belongs to the next one
      float dx_t[kC];
#pragma unroll
      for (int j = 0; j < kC; ++j) {
#pragma unroll
        for (int k = 0; k < kW; ++k)
          if (k + 1 == K) window[j][k] = xs[i][j];
        float g = 0.0f;
        if (kInterior || (t >= 0 && t < len)) {
          g = douts[i][j];
          if (p.silu) {
            float v = bias[j];
#pragma unroll
            for (int k = 0; k < kW; ++k)
              if (k < K) v = fmaf(w[j][k], window[j][k], v);
            const float sg = sigmoid(v);
            g *= sg * fmaf(v, 1.0f - sg, 1.0f);
          }
        }
        if (kInterior || (t >= t0 && t < t1)) {
#pragma unroll
          for (int k = 0; k < kW; ++k)
            if (k < K) gw[j][k] = fmaf(g, window[j][k], gw[j][k]);
          gb[j] += g;
        }
#pragma unroll
        for (int k = kW - 1; k > 0; --k) recent[j][k] = recent[j][k - 1];
        recent[j][0] = g;
        // dx at s = t − (K−1): Σ_k w[k]·dpre[s + K−1−k] = Σ_k w[k]·dpre[t − k] = Σ_k w[k]·recent[k].
        float acc = 0.0f;
#pragma unroll
        for (int k = 0; k < kW; ++k)
          if (k < K) acc = fmaf(w[j][k], recent[j][k], acc);
        dx_t[j] = acc;
#pragma unroll
        for (int k = 0; k + 1 < kW; ++k)
          if (k + 1 < K) window[j][k] = window[j][k + 1];
      }
      const int s = t - history;
      if (kInterior) {
        store_packed<T, kC>(dx + offset + int64_t(s) * p.channels + c0, dx_t);
      } else if (s >= s_begin) {
#pragma unroll
        for (int j = 0; j < kC; ++j) {
          if (s >= 0)
            dx[offset + int64_t(s) * p.channels + c0 + j] = from_float<T>(dx_t[j]);
          else
            dinitial_state[(int64_t(b) * p.channels + c0 + j) * history + s + history] = dx_t[j];
        }
      }
    }
  };
  const int interior_end = min(t1, len);
  for (int batch0 = s_begin; batch0 < t_end; batch0 += kLoadBatch) {
    if (batch0 >= t0 + history && batch0 >= history && batch0 + kLoadBatch <= interior_end)
      run_batch(batch0, std::true_type{});
    else
      run_batch(batch0, std::false_type{});
  }
}

template <typename T, int kFixedWidth, int kC>
__global__ void conv_backward_kernel(ConvArgs p, const T* dout, T* dx, float* dinitial_state, float* dweight,
                                     float* dbias) {
  constexpr int kW = register_width(kFixedWidth);
  const int K = kFixedWidth > 0 ? kFixedWidth : p.width;
  const int c0 = (blockIdx.x * kWarpChannels + threadIdx.x) * kC, b = blockIdx.z;
  const int t0 = (blockIdx.y * kBackwardSegments + threadIdx.y) * kSegment;
  float gw[kC][kW] = {}, gb[kC] = {};
  if (c0 < p.channels && t0 < p.L) backward_segment<T, kFixedWidth, kC>(p, dout, dx, dinitial_state, c0, b, t0, gw, gb);
  // The block's segments' sums, added in a fixed order, then one atomic per weight.
  __shared__ float partial[kBackwardSegments][kWarpChannels][kC][kW + 1];
#pragma unroll
  for (int j = 0; j < kC; ++j) {
#pragma unroll
    for (int k = 0; k < kW; ++k) partial[threadIdx.y][threadIdx.x][j][k] = gw[j][k];
    partial[threadIdx.y][threadIdx.x][j][kW] = gb[j];
  }
  __syncthreads();
  if (threadIdx.y != 0 || c0 >= p.channels) return;
#pragma unroll
  for (int j = 0; j < kC; ++j) {
#pragma unroll
    for (int k = 0; k <= kW; ++k) {
      if (k < K || k == kW) {
        float sum = 0.0f;
#pragma unroll
        for (int s = 0; s < kBackwardSegments; ++s) sum += partial[s][threadIdx.x][j][k];
        if (k < K)
          atomicAdd(dweight + (c0 + j) * K + k, sum);
        else if (dbias)
          atomicAdd(dbias + c0 + j, sum);
      }
    }
  }
}

// x rows are x_row_stride elements apart; with second_half, each row's next `channels` elements
// (an in-projection's z half) are copied there too.
template <typename T>
__global__ void conv_step_kernel(ConvArgs p, int64_t x_row_stride, float* state, T* out, T* second_half) {
  wait_for_previous_kernels();
  allow_next_kernel_launch();
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= int64_t(p.batch) * p.channels) return;
  const int64_t row = index / p.channels;
  const int c = int(index - row * p.channels), history = p.width - 1;
  const T* x_row = static_cast<const T*>(p.x) + row * x_row_stride;
  if (second_half) second_half[index] = x_row[p.channels + c];
  float* s = state + index * history;
  const float x = to_float(x_row[c]);
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

// Channel pairs need an even channel count and x and the other rows aligned to a pair.
template <typename T>
bool channel_pairs(const ConvArgs& p, std::initializer_list<const T*> rows) {
  bool aligned = p.channels % 2 == 0 && reinterpret_cast<uintptr_t>(p.x) % (2 * sizeof(T)) == 0;
  for (const T* row : rows) aligned = aligned && reinterpret_cast<uintptr_t>(row) % (2 * sizeof(T)) == 0;
  return aligned;
}

template <typename T>
void forward(const ConvArgs& p, ConvOutputs& out) {
  float* final_state = out.final_state.data<float>();
  if (int64_t(p.batch) * p.L * p.channels > 0) {
    T* dst = static_cast<T*>(out.out.raw());
    if (channel_pairs<T>(p, {dst})) {
      auto kernel = p.width == kFastWidth ? conv_forward_kernel<T, kFastWidth, 2> : conv_forward_kernel<T, 0, 2>;
      kernel<<<segment_grid(p, kBlockChannels, 2, 1), kBlockChannels>>>(p, dst, final_state);
    } else {
      auto kernel = p.width == kFastWidth ? conv_forward_kernel<T, kFastWidth, 1> : conv_forward_kernel<T, 0, 1>;
      kernel<<<segment_grid(p, kBlockChannels, 1, 1), kBlockChannels>>>(p, dst, final_state);
    }
  }
  const int64_t states = int64_t(p.batch) * p.channels * (p.width - 1);
  if (p.L == 0 && states > 0) conv_final_state_kernel<T><<<blocks_for(states, 256), 256>>>(p, final_state);
  check_launch("causal_conv1d forward");
}

template <typename T>
void backward(const ConvArgs& p, const Tensor& dout, ConvGrads& g, float* dweight, float* dbias) {
  float* dinit = g.dinitial_state.defined() ? g.dinitial_state.data<float>() : nullptr;
  if (dinit && p.L == 0) g.dinitial_state.zero_();
  if (int64_t(p.batch) * p.L * p.channels > 0) {
    const T* dy = static_cast<const T*>(dout.raw());
    T* dx = static_cast<T*>(g.dx.raw());
    if (channel_pairs<T>(p, {dy, dx})) {
      auto kernel = p.width == kFastWidth ? conv_backward_kernel<T, kFastWidth, 2> : conv_backward_kernel<T, 0, 2>;
      kernel<<<segment_grid(p, kWarpChannels, 2, kBackwardSegments), kBackwardBlock>>>(p, dy, dx, dinit, dweight,
                                                                                       dbias);
    } else {
      auto kernel = p.width == kFastWidth ? conv_backward_kernel<T, kFastWidth, 1> : conv_backward_kernel<T, 0, 1>;
      kernel<<<segment_grid(p, kWarpChannels, 1, kBackwardSegments), kBackwardBlock>>>(p, dy, dx, dinit, dweight,
                                                                                       dbias);
    }
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

ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout, Tensor* dweight_into, Tensor* dbias_into) {
  Prepared prepared = prepare(in, false);
  const ConvArgs& p = prepared.args;
  require_cuda_tensor(dout, "causal_conv1d dout");
  check_shape(dout, in.x.shape(), "causal_conv1d dout");
  check_dtype(dout, in.x.dtype(), "causal_conv1d dout");
  ConvGrads g;
  g.dx = Tensor::empty(in.x.shape(), in.x.dtype(), Device::cuda);
  // The kernel adds its weight and bias gradients with atomics: into the caller's buffers, or zeros.
  if (!dweight_into) g.dweight = Tensor::zeros(in.weight.shape(), DType::f32, Device::cuda);
  if (in.bias.defined() && !dbias_into) g.dbias = Tensor::zeros({p.channels}, DType::f32, Device::cuda);
  float* dweight = (dweight_into ? *dweight_into : g.dweight).data<float>();
  float* dbias = dbias_into ? dbias_into->data<float>() : g.dbias.defined() ? g.dbias.data<float>() : nullptr;
  if (in.initial_state.defined())
    g.dinitial_state = Tensor::empty({p.batch, p.channels, p.width - 1}, DType::f32, Device::cuda);
  if (in.x.dtype() == DType::f32)
    backward<float>(p, dout, g, dweight, dbias);
  else
    backward<__nv_bfloat16>(p, dout, g, dweight, dbias);
  return g;
}

namespace {
// The step kernel over prepared args whose x rows are x_row_stride apart (second_half optional).
Tensor run_conv_step(const ConvArgs& p, DType dtype, int64_t x_row_stride, Tensor& state, Tensor* second_half) {
  require_cuda_tensor(state, "causal_conv1d_step state");
  check_shape(state, {p.batch, p.channels, p.width - 1}, "causal_conv1d_step state");
  check_dtype(state, DType::f32, "causal_conv1d_step state");
  Tensor out = Tensor::empty({p.batch, p.channels}, dtype, Device::cuda);
  const int64_t n = int64_t(p.batch) * p.channels;
  if (n == 0) return out;
  if (dtype == DType::f32)
    launch_overlapping("causal_conv1d step", conv_step_kernel<float>, dim3(blocks_for(n, 256)), dim3(256), 0, p,
                       x_row_stride, state.data<float>(), static_cast<float*>(out.raw()),
                       second_half ? second_half->data<float>() : nullptr);
  else
    launch_overlapping("causal_conv1d step", conv_step_kernel<__nv_bfloat16>, dim3(blocks_for(n, 256)), dim3(256), 0, p,
                       x_row_stride, state.data<float>(), static_cast<__nv_bfloat16*>(out.raw()),
                       second_half ? static_cast<__nv_bfloat16*>(second_half->raw()) : nullptr);
  return out;
}
}  // namespace

Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state) {
  Prepared prepared = prepare(step, true);
  return run_conv_step(prepared.args, step.x.dtype(), prepared.args.channels, state, nullptr);
}

Tensor causal_conv1d_step_first_half(const ConvInputs& step, Tensor& state, Tensor& z_out) {
  require_cuda_tensor(step.x, "causal_conv1d x");
  MAMBA_CHECK(step.x.ndim() == 2 && step.x.size(1) % 2 == 0, "causal_conv1d x: expected [batch, 2C], got ",
              shape_string(step.x.shape()));
  const int64_t batch = step.x.size(0), channels = step.x.size(1) / 2;
  require_cuda_tensor(z_out, "causal_conv1d z_out");
  check_shape(z_out, {batch, channels}, "causal_conv1d z_out");
  check_dtype(z_out, step.x.dtype(), "causal_conv1d z_out");
  // z_out has the shape and dtype of the x half, so it stands in for x in prepare's checks.
  ConvInputs half = step;
  half.x = z_out;
  Prepared prepared = prepare(half, true);
  prepared.args.x = step.x.raw();
  return run_conv_step(prepared.args, step.x.dtype(), 2 * channels, state, &z_out);
}

}  // namespace cuda
}  // namespace mamba::ops

// CUDA optimiser updates (ops/optimizer_update.h). The table built once per ParameterTable lists
// every parameter's addresses and the work chunks (a slot and a run of kChunk elements of it); each
// kernel below runs one block per chunk, so one launch covers every parameter. The norm adds fixed
// per-chunk partial sums in order in one block, so it does not depend on scheduling, and leaves the
// clip scale in device memory for the updates: no copy to the host between the norm and the update.
#include <math_constants.h>

#include <cstring>

#include "ops/cuda/common.cuh"
#include "ops/optimizer_update.h"

namespace mamba::ops::cuda {

namespace {
using namespace cuda_detail;

constexpr int kThreads = 256;
constexpr int64_t kChunk = 32 * 1024;

struct DeviceSlot {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  __nv_bfloat16* compute;
  int64_t numel;
  int32_t weight_decay;
  int32_t vector;  // every array 16-byte aligned (compute 8-byte): chunks move in packs of four
};
struct Chunk {
  int32_t slot;
  int32_t index;  // elements [index·kChunk, (index + 1)·kChunk) of the slot, clipped to its size
};
static_assert(sizeof(DeviceSlot) % sizeof(int64_t) == 0 && sizeof(Chunk) == sizeof(int64_t));

struct DeviceTable {
  Tensor slots;         // DeviceSlot[], stored as i64 words
  Tensor chunks;        // Chunk[], one i64 word each
  Tensor partial_sums;  // f64 [chunk count]: the norm's sum of each chunk
  int64_t chunk_count = 0;
};

const DeviceTable& device_table(const ParameterTable& table) {
  return *static_cast<const DeviceTable*>(table.backend_data().get());
}

// A copy on the GPU of trivially copyable host objects, in i64 words.
template <typename T>
Tensor words_on_device(const std::vector<T>& items) {
  Tensor host = Tensor::empty({int64_t(items.size() * sizeof(T) / sizeof(int64_t))}, DType::i64);
  std::memcpy(host.raw(), items.data(), items.size() * sizeof(T));
  return host.to(Device::cuda);
}

// The slot and element range of this block's chunk.
struct ChunkRange {
  DeviceSlot slot;
  int64_t begin, end;
};
__device__ ChunkRange chunk_range(const DeviceSlot* slots, const Chunk* chunks) {
  const Chunk c = chunks[blockIdx.x];
  ChunkRange r{slots[c.slot], int64_t(c.index) * kChunk, 0};
  r.end = min(r.begin + kChunk, r.slot.numel);
  return r;
}

__device__ double block_sum_double(double v, double* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < blockDim.x / 32; ++w) total += scratch[w];
  return total;  // valid in thread 0
}

// Elements [begin, end) of a chunk as packs of 4 (from begin, a multiple of 4) where the slot is
// aligned for them, and one by one past the last whole pack; f(i) or f4(i) per pack at i.
template <typename One, typename Four>
__device__ __forceinline__ void for_each_element(const ChunkRange& r, One f, Four f4) {
  int64_t i = r.begin;
  if (r.slot.vector) {
    const int64_t packed_end = r.begin + (r.end - r.begin) / 4 * 4;
    for (int64_t j = r.begin + 4 * threadIdx.x; j < packed_end; j += 4 * kThreads) f4(j);
    i = packed_end;
  }
  for (i += threadIdx.x; i < r.end; i += kThreads) f(i);
}

__global__ void squares_partial_kernel(const DeviceSlot* slots, const Chunk* chunks, double* partial) {
  __shared__ double scratch[kThreads / 32];
  const ChunkRange r = chunk_range(slots, chunks);
  double sum = 0;
  for_each_element(
      r,
      [&](int64_t i) {
        const double g = r.slot.grad[i];
        sum += g * g;
      },
      [&](int64_t i) {
        float g[4];
        load_packed<float, 4>(r.slot.grad + i, g);
#pragma unroll
        for (int k = 0; k < 4; ++k) sum += double(g[k]) * g[k];
      });
  const double block = block_sum_double(sum, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = block;
}

__global__ void norm_and_scale_kernel(const double* partial, int64_t count, double max_norm, double* norm_out,
                                      float* scale_out) {
  __shared__ double scratch[kThreads / 32];
  double sum = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) sum += partial[i];
  const double total = block_sum_double(sum, scratch);
  if (threadIdx.x != 0) return;
  const double norm = sqrt(total);
  double scale = max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
  if (!isfinite(norm)) scale = CUDART_NAN;
  norm_out[0] = norm;
  scale_out[0] = float(scale);
}

// One element's AdamW update: p, m, v in place from the unscaled gradient g.
__device__ __forceinline__ void adamw_element(float g, float& p, float& m, float& v, const AdamWScalars& s, float scale,
                                              float decay_factor) {
  g *= scale;
  p *= decay_factor;
  m += s.one_minus_beta1 * (g - m);
  v = v * s.beta2 + s.one_minus_beta2 * (g * g);
  const float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
  p -= s.step_size * (m / denom);
}

__global__ void adamw_kernel(const DeviceSlot* slots, const Chunk* chunks, AdamWScalars s, const float* scale_in) {
  const float scale = *scale_in;
  if (!isfinite(scale)) return;
  const ChunkRange r = chunk_range(slots, chunks);
  const DeviceSlot& t = r.slot;
  const float decay_factor = t.weight_decay ? s.decay_factor : 1.0f;
  for_each_element(
      r,
      [&](int64_t i) {
        float p = t.param[i], m = t.exp_avg[i], v = t.exp_avg_sq[i];
        adamw_element(t.grad[i], p, m, v, s, scale, decay_factor);
        t.param[i] = p;
        t.exp_avg[i] = m;
        t.exp_avg_sq[i] = v;
        if (t.compute) t.compute[i] = __float2bfloat16_rn(p);
      },
      [&](int64_t i) {
        float g[4], p[4], m[4], v[4];
        load_packed<float, 4>(t.grad + i, g);
        load_packed<float, 4>(t.param + i, p);
        load_packed<float, 4>(t.exp_avg + i, m);
        load_packed<float, 4>(t.exp_avg_sq + i, v);
#pragma unroll
        for (int k = 0; k < 4; ++k) adamw_element(g[k], p[k], m[k], v[k], s, scale, decay_factor);
        store_packed<float, 4>(t.param + i, p);
        store_packed<float, 4>(t.exp_avg + i, m);
        store_packed<float, 4>(t.exp_avg_sq + i, v);
        if (t.compute) store_packed<__nv_bfloat16, 4>(t.compute + i, p);
      });
}

__global__ void sgd_kernel(const DeviceSlot* slots, const Chunk* chunks, SgdScalars s, const float* scale_in) {
  const float scale = *scale_in;
  if (!isfinite(scale)) return;
  const ChunkRange r = chunk_range(slots, chunks);
  const float weight_decay = r.slot.weight_decay ? s.weight_decay : 0.0f;
  float* buffer = r.slot.exp_avg;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
    float g = r.slot.grad[i] * scale + weight_decay * r.slot.param[i];
    if (buffer) {
      g = s.first_step ? g : s.momentum * buffer[i] + g;
      buffer[i] = g;
    }
    const float p = r.slot.param[i] - s.lr * g;
    r.slot.param[i] = p;
    if (r.slot.compute) r.slot.compute[i] = __float2bfloat16_rn(p);
  }
}

}  // namespace

std::shared_ptr<void> build_parameter_table(const std::vector<ParameterSlot>& slots) {
  std::vector<DeviceSlot> device_slots;
  std::vector<Chunk> chunks;
  for (const ParameterSlot& s : slots) {
    const int64_t n = s.param.numel();
    MAMBA_CHECK((n + kChunk - 1) / kChunk <= INT32_MAX && slots.size() <= size_t(INT32_MAX),
                "parameter table: too many elements");
    for (int64_t c = 0; c * kChunk < n; ++c) chunks.push_back({int32_t(device_slots.size()), int32_t(c)});
    DeviceSlot d{s.param.data<float>(),
                 s.grad.data<float>(),
                 s.exp_avg.defined() ? s.exp_avg.data<float>() : nullptr,
                 s.exp_avg_sq.defined() ? s.exp_avg_sq.data<float>() : nullptr,
                 static_cast<__nv_bfloat16*>(s.compute.defined() ? s.compute.raw() : nullptr),
                 n,
                 s.weight_decay,
                 0};
    // The packed path (squares, AdamW) reads or writes every array the slot has.
    d.vector = aligned16(d.param) && aligned16(d.grad) && aligned16(d.exp_avg) && aligned16(d.exp_avg_sq) &&
               reinterpret_cast<uintptr_t>(d.compute) % 8 == 0;
    device_slots.push_back(d);
  }
  auto table = std::make_shared<DeviceTable>();
  table->chunk_count = int64_t(chunks.size());
  if (chunks.empty()) return table;
  table->slots = words_on_device(device_slots);
  table->chunks = words_on_device(chunks);
  table->partial_sums = Tensor::empty({table->chunk_count}, DType::f64, Device::cuda);
  return table;
}

GradientNorm gradient_norm(const ParameterTable& table, double max_norm) {
  const DeviceTable& t = device_table(table);
  GradientNorm out{Tensor::empty({1}, DType::f64, Device::cuda), Tensor::empty({1}, DType::f32, Device::cuda)};
  const auto* slots = reinterpret_cast<const DeviceSlot*>(t.slots.defined() ? t.slots.raw() : nullptr);
  const auto* chunks = reinterpret_cast<const Chunk*>(t.chunks.defined() ? t.chunks.raw() : nullptr);
  if (t.chunk_count > 0) {
    squares_partial_kernel<<<unsigned(t.chunk_count), kThreads>>>(slots, chunks, t.partial_sums.data<double>());
    check_launch("squares_partial_kernel");
  }
  norm_and_scale_kernel<<<1, kThreads>>>(t.chunk_count > 0 ? t.partial_sums.data<double>() : nullptr, t.chunk_count,
                                         max_norm, out.norm.data<double>(), out.scale.data<float>());
  check_launch("norm_and_scale_kernel");
  return out;
}

void adamw_update_(const ParameterTable& table, const AdamWScalars& s, const Tensor& scale) {
  const DeviceTable& t = device_table(table);
  if (t.chunk_count == 0) return;
  adamw_kernel<<<unsigned(t.chunk_count), kThreads>>>(reinterpret_cast<const DeviceSlot*>(t.slots.raw()),
                                                      reinterpret_cast<const Chunk*>(t.chunks.raw()), s,
                                                      scale.data<float>());
  check_launch("adamw_kernel");
}

void sgd_update_(const ParameterTable& table, const SgdScalars& s, const Tensor& scale) {
  const DeviceTable& t = device_table(table);
  if (t.chunk_count == 0) return;
  sgd_kernel<<<unsigned(t.chunk_count), kThreads>>>(reinterpret_cast<const DeviceSlot*>(t.slots.raw()),
                                                    reinterpret_cast<const Chunk*>(t.chunks.raw()), s,
                                                    scale.data<float>());
  check_launch("sgd_kernel");
}

}  // namespace mamba::ops::cuda

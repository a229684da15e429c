// CUDA LM head fused with softmax cross-entropy, chunked over rows.
//
// For each block of rows: logits = h·Wᵀ (cuBLASLt, float32 out), then one CUDA block per row reads
// the row once (kept in shared memory), finds max/argmax and logsumexp and writes the gradient
// (softmax − onehot)/count in the products' dtype (over the logits when that is float32), which two
// more products turn into dh = G·W and dW += Gᵀ·h. Only one block of logits exists at a time (at
// most kLogitBytes). A bf16 gradient is gathered over several blocks (up to kGradientBytes) before
// dW += Gᵀ·h runs: each run of that product reads and writes all of dW (154 MB of float32 at the
// 130m shape), once per block of logits before. The counted rows and the mean of the per-row losses
// (summed in double) are formed on the GPU too: nothing here waits for it.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "ops/cross_entropy.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm.cuh"

namespace mamba::ops {
namespace {
using namespace cuda_detail;

constexpr int kThreads = 256;      // the one-block totals kernels
constexpr int kRowThreads = 1024;  // the softmax rows kernel: one block per SM (its row fills shared memory)
constexpr int64_t kLogitBytes = int64_t(512) << 20;
constexpr int64_t kGradientBytes = int64_t(2) << 30;
int64_t logit_block_bytes = kLogitBytes, gradient_group_bytes = kGradientBytes;  // set_lm_head_block_bytes

struct ArgMax {
  float value;
  int index;
};

__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

__device__ ArgMax block_argmax(ArgMax v, ArgMax* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2)
    v = better(v, {__shfl_xor_sync(0xffffffffu, v.value, offset), __shfl_xor_sync(0xffffffffu, v.index, offset)});
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kRowThreads / 32 ? scratch[lane] : ArgMax{-INFINITY, 0x7fffffff};
  for (int offset = 16; offset > 0; offset /= 2)
    v = better(v, {__shfl_xor_sync(0xffffffffu, v.value, offset), __shfl_xor_sync(0xffffffffu, v.index, offset)});
  return v;
}

// Online softmax state of one thread (or, merged, of a block): the largest logit seen, its first
// index, and Σ exp(z − max) over the logits seen.
struct RowState {
  ArgMax best;
  float sum;
};

__device__ __forceinline__ void add_logit(RowState& r, float z, int j) {
  if (z > r.best.value) {
    r.sum = r.sum * __expf(r.best.value - z) + 1.0f;
    r.best = {z, j};
  } else {
    r.sum += __expf(z - r.best.value);
  }
}

// Sum over a block of kThreads threads in a fixed order; thread 0 gets the total.
__device__ double block_sum_in_order(double v, double* partial) {
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  return partial[0];
}

// totals[1] = the number of targets ≥ 0 (one block).
__global__ void __launch_bounds__(kThreads) count_targets_kernel(const int32_t* targets, int64_t M, double* totals) {
  __shared__ double partial[kThreads];
  double counted = 0.0;
  for (int64_t i = threadIdx.x; i < M; i += kThreads) counted += targets[i] >= 0 ? 1.0 : 0.0;
  const double total = block_sum_in_order(counted, partial);
  if (threadIdx.x == 0) totals[1] = total;
}

// totals[0] = Σ row_loss / totals[1] (0 with no counted row), summed in double (one block).
__global__ void __launch_bounds__(kThreads) mean_loss_kernel(const float* row_loss, int64_t M, double* totals) {
  __shared__ double partial[kThreads];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < M; i += kThreads) sum += double(row_loss[i]);
  const double total = block_sum_in_order(sum, partial);
  if (threadIdx.x == 0) totals[0] = totals[1] > 0.0 ? total / totals[1] : 0.0;
}

// W consecutive logits of a row (W = 4: one 16-byte load or store; rows then start 16-byte aligned
// because W divides V).
template <int W>
struct Pack {
  float v[W];
};

template <int W>
__device__ __forceinline__ Pack<W> load_pack(const float* p) {
  if constexpr (W == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    return {{q.x, q.y, q.z, q.w}};
  } else {
    return {{*p}};
  }
}

template <int W>
__device__ __forceinline__ void store_pack(float* p, const Pack<W>& x) {
  if constexpr (W == 4)
    *reinterpret_cast<float4*>(p) = make_float4(x.v[0], x.v[1], x.v[2], x.v[3]);
  else
    *p = x.v[0];
}

template <typename G, int W>
__device__ __forceinline__ void store_grad(G* p, const Pack<W>& x) {
  if constexpr (W == 4 && std::is_same_v<G, __nv_bfloat16>) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(x.v[0], x.v[1]), hi = __floats2bfloat162_rn(x.v[2], x.v[3]);
    uint2 bits;
    bits.x = *reinterpret_cast<const uint32_t*>(&lo);
    bits.y = *reinterpret_cast<const uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(p) = bits;
  } else if constexpr (W == 4) {
    store_pack<4>(p, x);
  } else {
    *p = from_float<G>(x.v[0]);
  }
}

// One block of kRowThreads per row of `logits` [rows, V]: loss, argmax, and (with_grad) the gradient
// (softmax − onehot)/count into `grad` [rows, V] (the logits themselves, in place, when G is float;
// bf16 for the bf16 products that follow, so no separate conversion pass). The row is read from
// global memory once: max, argmax and Σexp in one pass (online softmax) while its first `staged`
// logits are kept in shared memory, from which the gradient is formed (the whole row at the LM
// head's vocabulary, 201 KB; logits past `staged`, for larger vocabularies, are read again).
// W divides V and `staged`.
template <typename G, int W>
__global__ void __launch_bounds__(kRowThreads, 1)
    softmax_rows_kernel(const float* logits, G* grad, const int32_t* targets, int V, int staged, const double* totals,
                        bool with_grad, float* row_loss, int32_t* predictions) {
  extern __shared__ float4 staged_storage[];
  float* staged_row = reinterpret_cast<float*>(staged_storage);
  __shared__ ArgMax arg_scratch[32];
  __shared__ float sum_scratch[32];
  const int64_t row = blockIdx.x;
  const float* z = logits + row * V;
  const int target = targets[row];
  // Read before the block's reductions, whose barriers order it before any in-place gradient write.
  const float target_logit = threadIdx.x == 0 && target >= 0 ? z[target] : 0.0f;
  const int packs = V / W, staged_packs = staged / W;
  constexpr int kBatch = 4;  // loads in flight per thread
  RowState mine{{-INFINITY, 0x7fffffff}, 0.0f};
  for (int first = threadIdx.x; first < packs; first += kBatch * kRowThreads) {
    Pack<W> batch[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int p = first + b * kRowThreads;
      if (p < packs) batch[b] = load_pack<W>(z + int64_t(p) * W);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int p = first + b * kRowThreads;
      if (p >= packs) break;
      if (p < staged_packs) store_pack<W>(staged_row + p * W, batch[b]);
#pragma unroll
      for (int k = 0; k < W; ++k) add_logit(mine, batch[b].v[k], p * W + k);
    }
  }
  const ArgMax best = block_argmax(mine.best, arg_scratch);
  const float rescaled = mine.sum > 0.0f ? mine.sum * __expf(mine.best.value - best.value) : 0.0f;
  const float sum = block_sum(rescaled, sum_scratch);  // the reductions' barriers publish staged_row too
  if (threadIdx.x == 0) {
    predictions[row] = best.index;
    row_loss[row] = target >= 0 ? logf(sum) + best.value - target_logit : 0.0f;
  }
  if (!with_grad) return;
  G* g = grad + row * V;
  const float inv_sum = 1.0f / sum;
  const float grad_scale = totals[1] > 0.0 ? float(1.0 / totals[1]) : 0.0f;
  for (int p = threadIdx.x; p < packs; p += kRowThreads) {
    Pack<W> x = p < staged_packs ? load_pack<W>(staged_row + p * W) : load_pack<W>(z + int64_t(p) * W);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const int j = p * W + k;
      const float prob = __expf(x.v[k] - best.value) * inv_sum;
      x.v[k] = target >= 0 ? (prob - (j == target ? 1.0f : 0.0f)) * grad_scale : 0.0f;
    }
    store_grad<G, W>(g + int64_t(p) * W, x);
  }
}

// Launches the row kernel with as much of each row staged in shared memory as one block may hold.
template <typename G, int W>
void launch_softmax_rows(int64_t rows, const float* logits, G* grad, const int32_t* targets, int V,
                         const double* totals, bool with_grad, float* row_loss, int32_t* predictions) {
  static const int capacity = [] {
    int device = 0, bytes = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
               "cudaDeviceGetAttribute");
    // Leave room for the kernel's static shared memory (the reductions' scratch).
    bytes -= 1024;
    check_cuda(cudaFuncSetAttribute(softmax_rows_kernel<G, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
               "cudaFuncSetAttribute (softmax rows)");
    return bytes / int(sizeof(float)) / W * W;
  }();
  const int staged = std::min(V, capacity);
  softmax_rows_kernel<G, W><<<unsigned(rows), kRowThreads, size_t(staged) * sizeof(float)>>>(
      logits, grad, targets, V, staged, totals, with_grad, row_loss, predictions);
}

template <typename G>
void softmax_rows(int64_t rows, const float* logits, G* grad, const int32_t* targets, int V, const double* totals,
                  bool with_grad, float* row_loss, int32_t* predictions) {
  if (V % 4 == 0)
    launch_softmax_rows<G, 4>(rows, logits, grad, targets, V, totals, with_grad, row_loss, predictions);
  else
    launch_softmax_rows<G, 1>(rows, logits, grad, targets, V, totals, with_grad, row_loss, predictions);
}

}  // namespace

namespace cuda {

CrossEntropyResult lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                         bool with_grad, Tensor* dweight, bool overwrite_dweight) {
  require_cuda_tensor(hidden, "lm_head_cross_entropy hidden");
  MAMBA_CHECK(hidden.ndim() == 2, "lm_head_cross_entropy hidden: expected [M, d], got ", shape_string(hidden.shape()));
  MAMBA_CHECK(hidden.dtype() == DType::f32 || hidden.dtype() == DType::bf16,
              "lm_head_cross_entropy hidden: expected f32 or bf16, got ", dtype_name(hidden.dtype()));
  const int64_t M = hidden.size(0), d = hidden.size(1);
  require_cuda_tensor(weight, "lm_head_cross_entropy weight");
  MAMBA_CHECK(weight.ndim() == 2 && weight.size(1) == d, "lm_head_cross_entropy weight: expected [V, ", d, "], got ",
              shape_string(weight.shape()));
  const int64_t V = weight.size(0);
  MAMBA_CHECK(V > 0, "lm_head_cross_entropy weight: the vocabulary is empty");
  check_shape(targets, {M}, "lm_head_cross_entropy targets");
  check_dtype(targets, DType::i32, "lm_head_cross_entropy targets");
  if (with_grad && dweight) {
    require_cuda_tensor(*dweight, "lm_head_cross_entropy dweight");
    check_shape(*dweight, weight.shape(), "lm_head_cross_entropy dweight");
    check_dtype(*dweight, DType::f32, "lm_head_cross_entropy dweight");
  }

  // The entry point checked the targets (ops/cross_entropy.cpp).
  Tensor gpu_targets = targets.device() == Device::cuda ? targets : targets.to(Device::cuda);
  CrossEntropyResult result;
  result.loss.values = Tensor::empty({2}, DType::f64, Device::cuda);
  double* totals = result.loss.values.data<double>();
  result.predictions = Tensor::empty({M}, DType::i32, Device::cuda);
  if (with_grad) result.dhidden = Tensor::empty({M, d}, DType::f32, Device::cuda);
  if (M == 0) {
    result.loss.values.zero_();
    if (with_grad && dweight && overwrite_dweight) dweight->zero_();
    return result;
  }
  count_targets_kernel<<<1, kThreads>>>(gpu_targets.data<int32_t>(), M, totals);
  check_launch("lm_head_cross_entropy count");

  // Both operands of each product share one dtype (product_dtype: bf16 when either is bf16).
  const DType compute = product_dtype(hidden, weight);
  Tensor w = on_device_as(weight, compute, "lm_head_cross_entropy weight");
  Tensor hidden_c = on_device_as(hidden, compute, "lm_head_cross_entropy hidden");
  const int64_t rows_per_chunk = std::max<int64_t>(1, std::min<int64_t>(M, logit_block_bytes / (V * 4)));
  Tensor logits = Tensor::empty({rows_per_chunk, V}, DType::f32, Device::cuda);
  // bf16 products take the gradient in bf16, written by the softmax kernel into a group of up to
  // kGradientBytes of rows; f32 ones take it in place, a group being one chunk.
  const size_t elem = dtype_size(compute);
  const bool grad_in_logits = compute == DType::f32 || !with_grad;
  const int64_t rows_per_group =
      grad_in_logits ? rows_per_chunk
                     : std::max(rows_per_chunk, std::min<int64_t>(M, gradient_group_bytes / (V * int64_t(elem))));
  Tensor grad = grad_in_logits ? logits : Tensor::empty({rows_per_group, V}, compute, Device::cuda);
  Tensor row_loss = Tensor::empty({M}, DType::f32, Device::cuda);
  const auto hidden_rows = [&](int64_t r0) { return static_cast<const char*>(hidden_c.raw()) + size_t(r0 * d) * elem; };
  for (int64_t g0 = 0; g0 < M; g0 += rows_per_group) {
    const int64_t group_end = std::min(M, g0 + rows_per_group);
    for (int64_t r0 = g0; r0 < group_end; r0 += rows_per_chunk) {
      const int64_t rows = std::min(rows_per_chunk, group_end - r0);
      gemm({hidden_rows(r0), compute, rows, d, false}, {w.raw(), compute, V, d, true}, logits.raw(), DType::f32, 1.0f,
           0.0f);
      const int32_t* chunk_targets = gpu_targets.data<int32_t>() + r0;
      float* chunk_loss = row_loss.data<float>() + r0;
      int32_t* chunk_predictions = result.predictions.data<int32_t>() + r0;
      void* chunk_grad = static_cast<char*>(grad.raw()) + size_t((r0 - g0) * V) * dtype_size(grad.dtype());
      if (grad.dtype() == DType::f32)
        softmax_rows(rows, logits.data<float>(), static_cast<float*>(chunk_grad), chunk_targets, int(V), totals,
                     with_grad, chunk_loss, chunk_predictions);
      else
        softmax_rows(rows, logits.data<float>(), static_cast<__nv_bfloat16*>(chunk_grad), chunk_targets, int(V), totals,
                     with_grad, chunk_loss, chunk_predictions);
      check_launch("lm_head_cross_entropy softmax");
      if (!with_grad) continue;
      gemm({chunk_grad, compute, rows, V, false}, {w.raw(), compute, V, d, false},
           result.dhidden.data<float>() + r0 * d, DType::f32, 1.0f, 0.0f);
    }
    if (with_grad && dweight)  // the first group overwrites when asked, the others add
      gemm({grad.raw(), compute, group_end - g0, V, true}, {hidden_rows(g0), compute, group_end - g0, d, false},
           dweight->raw(), DType::f32, 1.0f, overwrite_dweight && g0 == 0 ? 0.0f : 1.0f);
  }
  mean_loss_kernel<<<1, kThreads>>>(row_loss.data<float>(), M, totals);
  check_launch("lm_head_cross_entropy mean loss");
  return result;
}

void set_lm_head_block_bytes(int64_t logit_bytes, int64_t gradient_bytes) {
  logit_block_bytes = logit_bytes > 0 ? logit_bytes : kLogitBytes;
  gradient_group_bytes = gradient_bytes > 0 ? gradient_bytes : kGradientBytes;
}

}  // namespace cuda
}  // namespace mamba::ops

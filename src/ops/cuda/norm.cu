// CUDA residual add + RMSNorm / LayerNorm, forward and backward.
//
// One block per row: the row is read once into registers-by-stride, its sums reduced across the
// block, then normalised and written. Row sums are per-thread partial sums combined by a tree, so
// no float32 running sum grows over the whole row. The backward's weight and bias gradients are
// column sums over rows: each block takes up to kMostRowsPerBlock rows, keeps its column partials in
// registers and writes them as one row of partials; add_column_sums (common.cuh) adds the rows up.
// (One atomic per column and block instead put every block's adds onto the same d addresses: with
// four columns a load, whose atomics spread a warp's adds over four times the cache sectors, the
// 370m training backward took 3.70 ms a step against 2.74 with one column a load.)
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "ops/cuda/common.cuh"
#include "ops/norm.h"

namespace mamba::ops {
namespace {
using namespace cuda_detail;

constexpr int kThreads = 256;
// Rows per backward block: 16 keeps the rows of partials few, but at 4096 rows (1.4b training, batch
// 2) that is 256 blocks, two per SM, and the kernel ran at 63% of the memory rate; fewer rows a block
// where the blocks would not fill the GPU four deep.
constexpr int kMostRowsPerBlock = 16, kFewestRowsPerBlock = 4;
int backward_rows_per_block(int64_t rows) {
  const int64_t wanted_blocks = 4 * int64_t(multiprocessor_count());
  int per_block = kMostRowsPerBlock;
  while (per_block > kFewestRowsPerBlock && (rows + per_block - 1) / per_block < wanted_blocks) per_block /= 2;
  return per_block;
}
constexpr int kMaxColumnsPerThread = 16;  // rows up to 4096 wide
// The kernels keep a row's columns in registers, kColumns per thread; a small kColumns for narrow
// rows (4 for d ≤ 1024) keeps the register count down and the occupancy up.

struct NormArgs {
  const void* x = nullptr;
  const float* residual = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
  int64_t rows = 0;
  int d = 0;
  float eps = 1e-5f;
  bool layer = false;
};

// A thread's columns: kColumns / kVec groups of kVec consecutive columns, groups kBlock · kVec
// apart (kBlock: the block's threads). kVec = 4 where d is a multiple of 4 and the rows are aligned
// for it: a float row then moves as 16-byte loads and stores (a bf16 row as 8-byte ones), where one
// column a load kept the 370m training norms at 79–85% of their memory rate.
template <int kVec, int kBlock = kThreads>
__device__ __forceinline__ int group_column(int group) {
  return (int(threadIdx.x) + group * kBlock) * kVec;
}

template <typename T, int kColumns, int kVec>
__global__ void __launch_bounds__(kThreads)
    norm_forward_kernel(NormArgs p, T* out, float* residual_out, float* rstd_out, float* mean_out) {
  constexpr int kGroups = kColumns / kVec;
  __shared__ float scratch[32];
  // The norm weight is loaded before the wait: no kernel that allows an early launch writes weights
  // (common.cuh), and its round trip no longer follows the row's sums (1.4b batch-16 decode step
  // −3.7%, docs/perf/cuda_model.md m29).
  float w[kGroups][kVec] = {};
#pragma unroll
  for (int g = 0; g < kGroups; ++g)
    if (group_column<kVec>(g) < p.d) load_packed<float, kVec>(p.weight + group_column<kVec>(g), w[g]);
  wait_for_previous_kernels();
  allow_next_kernel_launch();
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(p.x) + row * p.d;
  const float* res = p.residual ? p.residual + row * p.d : nullptr;
  float s[kGroups][kVec] = {};
  float sum = 0.0f;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int j = group_column<kVec>(g);
    if (j < p.d) {
      float r[kVec] = {};
      load_packed<T, kVec>(x + j, s[g]);
      if (res) load_packed<float, kVec>(res + j, r);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        s[g][i] += r[i];
        sum += s[g][i];
      }
      store_packed<float, kVec>(residual_out + row * p.d + j, s[g]);
    }
  }
  float mean = 0.0f;
  if (p.layer) mean = block_sum(sum, scratch) / p.d;
  float squares = 0.0f;
#pragma unroll
  for (int g = 0; g < kGroups; ++g)
    if (group_column<kVec>(g) < p.d)
#pragma unroll
      for (int i = 0; i < kVec; ++i) squares = fmaf(s[g][i] - mean, s[g][i] - mean, squares);
  const float rstd = rsqrtf(block_sum(squares, scratch) / p.d + p.eps);
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int j = group_column<kVec>(g);
    if (j < p.d) {
      float v[kVec], b[kVec] = {};
      if (p.bias) load_packed<float, kVec>(p.bias + j, b);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = (s[g][i] - mean) * rstd * w[g][i] + b[i];
      store_packed<T, kVec>(out + row * p.d + j, v);
    }
  }
  if (threadIdx.x == 0) {
    rstd_out[row] = rstd;
    if (mean_out) mean_out[row] = mean;
  }
}

// One row's inputs to the backward, in registers.
template <int kGroups, int kVec>
struct NormBackwardRow {
  float dy[kGroups][kVec], s[kGroups][kVec], dresidual[kGroups][kVec];
  float rstd, mean;
};

template <typename T, int kGroups, int kVec, int kBlock>
__device__ __forceinline__ void load_backward_row(const NormArgs& p, int64_t row, const float* s_all,
                                                  const float* rstd_all, const float* mean_all, const T* dout,
                                                  const float* dresidual, NormBackwardRow<kGroups, kVec>& r) {
  r.rstd = rstd_all[row];
  r.mean = p.layer ? mean_all[row] : 0.0f;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int j = group_column<kVec, kBlock>(g);
#pragma unroll
    for (int i = 0; i < kVec; ++i) r.dy[g][i] = r.s[g][i] = r.dresidual[g][i] = 0.0f;
    if (j < p.d) {
      load_packed<T, kVec>(dout + row * p.d + j, r.dy[g]);
      load_packed<float, kVec>(s_all + row * p.d + j, r.s[g]);
      if (dresidual) load_packed<float, kVec>(dresidual + row * p.d + j, r.dresidual[g]);
    }
  }
}

// ds = rstd·(g − mean(g)·[layer] − x̂·mean(g·x̂)) with g = dout·w and x̂ the normalised row; dx_out,
// when given, receives ds rounded to T. A block walks rows_per_block rows with the next row's loads
// issued before the current row's sums, so two rows' loads are in flight and the block barriers of
// the sums overlap them.
template <typename T, int kColumns, int kVec, int kBlock>
__global__ void __launch_bounds__(kBlock)
    norm_backward_kernel(NormArgs p, const float* s_all, const float* rstd_all, const float* mean_all, const T* dout,
                         const float* dresidual, float* ds_out, T* dx_out, float* dweight_parts, float* dbias_parts,
                         int rows_per_block) {
  constexpr int kGroups = kColumns / kVec;
  __shared__ float scratch[32];
  float w[kGroups][kVec] = {}, dw[kGroups][kVec] = {}, db[kGroups][kVec] = {};
#pragma unroll
  for (int g = 0; g < kGroups; ++g)
    if (group_column<kVec, kBlock>(g) < p.d) load_packed<float, kVec>(p.weight + group_column<kVec, kBlock>(g), w[g]);
  const int64_t row0 = int64_t(blockIdx.x) * rows_per_block, row_end = min(p.rows, row0 + rows_per_block);
  NormBackwardRow<kGroups, kVec> next;
  load_backward_row<T, kGroups, kVec, kBlock>(p, row0, s_all, rstd_all, mean_all, dout, dresidual, next);
  for (int64_t row = row0; row < row_end; ++row) {
    const NormBackwardRow<kGroups, kVec> r = next;
    if (row + 1 < row_end)
      load_backward_row<T, kGroups, kVec, kBlock>(p, row + 1, s_all, rstd_all, mean_all, dout, dresidual, next);
    float xhat[kGroups][kVec], gw[kGroups][kVec];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        // Columns past d hold zeros (loaded so), and add nothing.
        xhat[g][i] = (r.s[g][i] - r.mean) * r.rstd;
        gw[g][i] = r.dy[g][i] * w[g][i];
        sum_g += gw[g][i];
        sum_gx = fmaf(gw[g][i], xhat[g][i], sum_gx);
        dw[g][i] = fmaf(r.dy[g][i], xhat[g][i], dw[g][i]);
        db[g][i] += r.dy[g][i];
      }
    }
    const float mean_gx = block_sum(sum_gx, scratch) / p.d;
    const float mean_g = p.layer ? block_sum(sum_g, scratch) / p.d : 0.0f;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      const int j = group_column<kVec, kBlock>(g);
      if (j < p.d) {
        float v[kVec];
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[i] = r.rstd * (gw[g][i] - mean_g - xhat[g][i] * mean_gx) + r.dresidual[g][i];
        store_packed<float, kVec>(ds_out + row * p.d + j, v);
        if (dx_out) store_packed<T, kVec>(dx_out + row * p.d + j, v);
      }
    }
  }
  // This block's column sums, one row of the partials (added up by add_column_sums).
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    const int j = group_column<kVec, kBlock>(g);
    if (j < p.d) {
      store_packed<float, kVec>(dweight_parts + int64_t(blockIdx.x) * p.d + j, dw[g]);
      if (dbias_parts) store_packed<float, kVec>(dbias_parts + int64_t(blockIdx.x) * p.d + j, db[g]);
    }
  }
}

template <int N>
using Int = std::integral_constant<int, N>;

// Calls f(Int<4>) when rows move four columns a load (`packed`), else f(Int<1>).
template <typename F>
void with_vec(bool packed, F&& f) {
  if (packed)
    f(Int<4>{});
  else
    f(Int<1>{});
}

// Calls f(Int<C>, Int<V>) with the smallest C of 4, 8, 16 such that C·kThreads ≥ d, and V as with_vec.
template <typename F>
void with_columns(int d, bool packed, F&& f) {
  auto with = [&](auto columns) { with_vec(packed, [&](auto vec) { f(columns, vec); }); };
  if (d <= 4 * kThreads)
    with(Int<4>{});
  else if (d <= 8 * kThreads)
    with(Int<8>{});
  else
    with(Int<kMaxColumnsPerThread>{});
}

// The backward's block shape, f(columns, vec, threads): 4 columns a thread in blocks of kThreads
// for d ≤ 1024, of 2·kThreads beyond, with 8 columns past 2048 (d ≤ 4096). At d = 2048 (the 1.4b
// training norms) blocks of kThreads at 8 columns took 100 registers, two blocks of 8 warps an SM,
// and ran at 83% of the memory floor.
template <typename F>
void with_backward_shape(int d, bool packed, F&& f) {
  auto with = [&](auto columns, auto threads) { with_vec(packed, [&](auto vec) { f(columns, vec, threads); }); };
  if (d <= 4 * kThreads)
    with(Int<4>{}, Int<kThreads>{});
  else if (d <= 8 * kThreads)
    with(Int<4>{}, Int<2 * kThreads>{});
  else
    with(Int<8>{}, Int<2 * kThreads>{});
}

// Whether rows of d columns at these addresses can move four columns at a time.
bool packed_rows(int d, std::initializer_list<std::pair<const void*, size_t>> rows) {
  bool ok = d % 4 == 0;
  for (const auto& [address, element_bytes] : rows)
    ok = ok && (address == nullptr || reinterpret_cast<uintptr_t>(address) % (4 * element_bytes) == 0);
  return ok;
}

struct Prepared {
  NormArgs args;
  Tensor weight, bias;
};

Prepared prepare(const NormInputs& in) {
  require_cuda_tensor(in.x, "add_norm x");
  MAMBA_CHECK(in.x.dtype() == DType::f32 || in.x.dtype() == DType::bf16, "add_norm (cuda): x must be f32 or bf16, got ",
              dtype_name(in.x.dtype()));
  MAMBA_CHECK(in.x.ndim() == 2, "add_norm x: expected [M, d], got ", shape_string(in.x.shape()));
  Prepared prepared;
  NormArgs& p = prepared.args;
  p.rows = in.x.size(0);
  p.d = int(in.x.size(1));
  MAMBA_CHECK(p.d <= kThreads * kMaxColumnsPerThread, "add_norm (cuda): rows of width ", p.d,
              " are wider than the supported ", kThreads * kMaxColumnsPerThread);
  p.eps = in.eps;
  p.layer = in.kind == NormKind::layer;
  check_shape(in.weight, {p.d}, "add_norm weight");
  prepared.weight = float32_on_device(in.weight, "add_norm weight");
  p.weight = prepared.weight.data<float>();
  if (in.bias.defined()) {
    MAMBA_CHECK(p.layer, "add_norm bias: only LayerNorm takes a bias");
    check_shape(in.bias, {p.d}, "add_norm bias");
    prepared.bias = float32_on_device(in.bias, "add_norm bias");
    p.bias = prepared.bias.data<float>();
  }
  if (in.residual.defined()) {
    require_cuda_tensor(in.residual, "add_norm residual");
    check_shape(in.residual, in.x.shape(), "add_norm residual");
    check_dtype(in.residual, DType::f32, "add_norm residual");
    p.residual = in.residual.data<float>();
  }
  p.x = in.x.raw();
  return prepared;
}

}  // namespace

namespace cuda {

NormOutputs add_norm_forward(const NormInputs& in) {
  Prepared prepared = prepare(in);
  const NormArgs& p = prepared.args;
  NormOutputs out;
  out.out = Tensor::empty(in.x.shape(), in.x.dtype(), Device::cuda);
  out.residual_out = Tensor::empty(in.x.shape(), DType::f32, Device::cuda);
  out.rstd = Tensor::empty({p.rows}, DType::f32, Device::cuda);
  if (p.layer) out.mean = Tensor::empty({p.rows}, DType::f32, Device::cuda);
  if (p.rows == 0) return out;
  float* mean = p.layer ? out.mean.data<float>() : nullptr;
  const size_t x_bytes = dtype_size(in.x.dtype());
  const bool packed = packed_rows(p.d, {{p.x, x_bytes},
                                        {p.residual, 4},
                                        {p.weight, 4},
                                        {p.bias, 4},
                                        {out.out.raw(), x_bytes},
                                        {out.residual_out.raw(), 4}});
  with_columns(p.d, packed, [&](auto columns, auto vec) {
    constexpr int kColumns = decltype(columns)::value, kVec = decltype(vec)::value;
    if (in.x.dtype() == DType::f32)
      launch_overlapping("add_norm forward", norm_forward_kernel<float, kColumns, kVec>, dim3(unsigned(p.rows)),
                         dim3(kThreads), 0, p, out.out.data<float>(), out.residual_out.data<float>(),
                         out.rstd.data<float>(), mean);
    else
      launch_overlapping("add_norm forward", norm_forward_kernel<__nv_bfloat16, kColumns, kVec>, dim3(unsigned(p.rows)),
                         dim3(kThreads), 0, p, static_cast<__nv_bfloat16*>(out.out.raw()),
                         out.residual_out.data<float>(), out.rstd.data<float>(), mean);
  });
  return out;
}

NormGrads add_norm_backward(const NormInputs& in, const NormOutputs& saved, const Tensor& dout,
                            const Tensor& dresidual_out, Tensor* dweight_into, Tensor* dbias_into) {
  Prepared prepared = prepare(in);
  const NormArgs& p = prepared.args;
  require_cuda_tensor(dout, "add_norm dout");
  check_shape(dout, in.x.shape(), "add_norm dout");
  check_dtype(dout, in.x.dtype(), "add_norm dout");
  require_cuda_tensor(saved.residual_out, "add_norm saved residual_out");
  check_shape(saved.residual_out, in.x.shape(), "add_norm saved residual_out");
  require_cuda_tensor(saved.rstd, "add_norm saved rstd");
  check_shape(saved.rstd, {p.rows}, "add_norm saved rstd");
  if (p.layer) {
    require_cuda_tensor(saved.mean, "add_norm saved mean");
    check_shape(saved.mean, {p.rows}, "add_norm saved mean");
  }
  if (dresidual_out.defined()) {
    require_cuda_tensor(dresidual_out, "add_norm dresidual_out");
    check_shape(dresidual_out, in.x.shape(), "add_norm dresidual_out");
    check_dtype(dresidual_out, DType::f32, "add_norm dresidual_out");
  }
  NormGrads g;
  g.ds = Tensor::empty(in.x.shape(), DType::f32, Device::cuda);
  g.dx = in.x.dtype() == DType::f32 ? g.ds : Tensor::empty(in.x.shape(), in.x.dtype(), Device::cuda);
  // The kernel adds its weight and bias gradients with atomics: into the caller's buffers, or zeros.
  if (!dweight_into) g.dweight = Tensor::zeros({p.d}, DType::f32, Device::cuda);
  if (in.bias.defined() && !dbias_into) g.dbias = Tensor::zeros({p.d}, DType::f32, Device::cuda);
  if (p.rows == 0) return g;
  const int rows_per_block = backward_rows_per_block(p.rows);
  const unsigned blocks = unsigned((p.rows + rows_per_block - 1) / rows_per_block);
  const float* mean = p.layer ? saved.mean.data<float>() : nullptr;
  const float* dres = dresidual_out.defined() ? dresidual_out.data<float>() : nullptr;
  float* dweight = (dweight_into ? *dweight_into : g.dweight).data<float>();
  float* dbias = dbias_into ? dbias_into->data<float>() : g.dbias.defined() ? g.dbias.data<float>() : nullptr;
  const size_t x_bytes = dtype_size(in.x.dtype());
  const bool packed = packed_rows(p.d, {{saved.residual_out.raw(), 4},
                                        {dout.raw(), x_bytes},
                                        {dres, 4},
                                        {p.weight, 4},
                                        {g.ds.raw(), 4},
                                        {g.dx.raw(), x_bytes}});
  Tensor dweight_parts = Tensor::empty({int64_t(blocks), p.d}, DType::f32, Device::cuda);
  Tensor dbias_parts = dbias ? Tensor::empty({int64_t(blocks), p.d}, DType::f32, Device::cuda) : Tensor();
  float* dbias_rows = dbias ? dbias_parts.data<float>() : nullptr;
  with_backward_shape(p.d, packed, [&](auto columns, auto vec, auto threads) {
    constexpr int kColumns = decltype(columns)::value, kVec = decltype(vec)::value, kBlock = decltype(threads)::value;
    if (in.x.dtype() == DType::f32)
      norm_backward_kernel<float, kColumns, kVec, kBlock><<<blocks, kBlock>>>(
          p, saved.residual_out.data<float>(), saved.rstd.data<float>(), mean, dout.data<float>(), dres,
          g.ds.data<float>(), nullptr, dweight_parts.data<float>(), dbias_rows, rows_per_block);
    else
      norm_backward_kernel<__nv_bfloat16, kColumns, kVec, kBlock><<<blocks, kBlock>>>(
          p, saved.residual_out.data<float>(), saved.rstd.data<float>(), mean,
          static_cast<const __nv_bfloat16*>(dout.raw()), dres, g.ds.data<float>(),
          static_cast<__nv_bfloat16*>(g.dx.raw()), dweight_parts.data<float>(), dbias_rows, rows_per_block);
  });
  add_column_sums(dweight_parts.data<float>(), blocks, p.d, dweight);
  if (dbias) add_column_sums(dbias_rows, blocks, p.d, dbias);
  check_launch("add_norm backward");
  return g;
}

}  // namespace cuda
}  // namespace mamba::ops

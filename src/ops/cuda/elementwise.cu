// CUDA element-wise helpers (ops/elementwise.h). Column splits and joins of row-major matrices
// are strided 2-D copies, done by a kernel in the widest units the layout allows (a strided
// cudaMemcpy2D of rows a few dozen bytes wide goes through the copy engine row by row).
#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

#include "ops/cuda/common.cuh"
#include "ops/elementwise.h"

namespace mamba::ops::cuda {

namespace {

template <typename T>
__global__ void add_kernel(T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    a[i] = cuda_detail::from_float<T>(cuda_detail::to_float(a[i]) + cuda_detail::to_float(b[i]));
}

__global__ void negative_exp_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = -expf(x[i]);
}

__global__ void add_product_kernel(float* a, const float* b, const float* c, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    a[i] = fmaf(b[i], c[i], a[i]);
}

__global__ void scale_kernel(float* a, float s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    a[i] *= s;
}

// One [rows, width] block copied between row-major matrices whose rows are `*_pitch` elements
// long (element addresses, not units, until a launch picks its unit).
struct ColumnBlock {
  void* dst;
  int64_t dst_pitch;
  const void* src;
  int64_t src_pitch, width;
};

// Up to kMaxColumnBlocks blocks of the same rows in one launch (x_proj's split into δ, B and C is
// one kernel, not three; a prefill's states are copied in one: each launch costs more than its
// copy), in units U.
constexpr int kMaxColumnBlocks = 64;
template <typename U>
struct ColumnBlocks {
  U* dst[kMaxColumnBlocks];
  const U* src[kMaxColumnBlocks];
  int64_t dst_pitch[kMaxColumnBlocks], src_pitch[kMaxColumnBlocks], width[kMaxColumnBlocks];
};

// Block k of the launch is copied by the grid's row k (blockIdx.y).
template <typename U>
__global__ void copy_columns_kernel(ColumnBlocks<U> blocks, int64_t rows) {
  const int k = blockIdx.y;
  const int64_t width = blocks.width[k], units = rows * width;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < units; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = j / width, c = j - r * width;
    blocks.dst[k][r * blocks.dst_pitch[k] + c] = blocks.src[k][r * blocks.src_pitch[k] + c];
  }
}

unsigned grid_for(int64_t n) {
  return unsigned(std::min<int64_t>(cuda_detail::blocks_for(n, 256), 8 * int64_t(cuda_detail::multiprocessor_count())));
}

// Copies every block (of `rows` rows, elements of `elem` bytes), kMaxColumnBlocks per launch.
void copy_columns(std::vector<ColumnBlock> blocks, int64_t rows, size_t elem) {
  std::erase_if(blocks, [](const ColumnBlock& b) { return b.width == 0; });
  if (rows == 0 || blocks.empty()) return;
  MAMBA_CHECK(elem >= 2 && elem <= 16, "copy_columns: element size ", elem, " is not supported");
  for (size_t first = 0; first < blocks.size(); first += kMaxColumnBlocks) {
    const size_t count = std::min<size_t>(kMaxColumnBlocks, blocks.size() - first);
    // The widest unit (16 bytes down to the element) that divides every row length, pitch and address.
    uint64_t layout = 0;
    for (size_t k = first; k < first + count; ++k) {
      const ColumnBlock& b = blocks[k];
      layout |= uint64_t(b.width * elem) | uint64_t(b.dst_pitch * elem) | uint64_t(b.src_pitch * elem) |
                reinterpret_cast<uintptr_t>(b.dst) | reinterpret_cast<uintptr_t>(b.src);
    }
    size_t unit = 16;
    while (unit > elem && layout % unit != 0) unit /= 2;
    auto launch = [&](auto unit_type) {
      using U = decltype(unit_type);
      const int64_t per_unit = int64_t(sizeof(U) / elem);  // elements per unit
      ColumnBlocks<U> typed{};
      int64_t widest = 0;
      for (size_t k = 0; k < count; ++k) {
        const ColumnBlock& b = blocks[first + k];
        typed.dst[k] = static_cast<U*>(b.dst);
        typed.src[k] = static_cast<const U*>(b.src);
        typed.dst_pitch[k] = b.dst_pitch / per_unit;
        typed.src_pitch[k] = b.src_pitch / per_unit;
        typed.width[k] = b.width / per_unit;
        widest = std::max(widest, typed.width[k]);
      }
      copy_columns_kernel<<<dim3(grid_for(rows * widest), unsigned(count)), 256>>>(typed, rows);
    };
    switch (unit) {
      case 16:
        launch(uint4{});
        break;
      case 8:
        launch(uint2{});
        break;
      case 4:
        launch(uint32_t{});
        break;
      default:
        launch(uint16_t{});
        break;
    }
    cuda_detail::check_launch("copy_columns_kernel");
  }
}

}  // namespace

void add_(Tensor& a, const Tensor& b) {
  MAMBA_CHECK(a.dtype() == DType::f32 || a.dtype() == DType::bf16, "add_ operand a (cuda): expected f32 or bf16, got ",
              dtype_name(a.dtype()));
  check_dtype(b, a.dtype(), "add_ operand b");
  if (a.numel() == 0) return;
  if (a.dtype() == DType::f32)
    add_kernel<<<grid_for(a.numel()), 256>>>(a.data<float>(), b.data<float>(), a.numel());
  else
    add_kernel<<<grid_for(a.numel()), 256>>>(static_cast<__nv_bfloat16*>(a.raw()),
                                             static_cast<const __nv_bfloat16*>(b.raw()), a.numel());
  cuda_detail::check_launch("add_kernel");
}

void scale_(Tensor& a, double s) {
  check_dtype(a, DType::f32, "scale_ operand");
  if (a.numel() == 0) return;
  scale_kernel<<<grid_for(a.numel()), 256>>>(a.data<float>(), float(s), a.numel());
  cuda_detail::check_launch("scale_kernel");
}

Tensor negative_exp(const Tensor& x) {
  const Tensor source = cuda_detail::on_device_as(x, DType::f32, "negative_exp input");
  Tensor out = Tensor::empty(x.shape(), DType::f32, Device::cuda);
  if (out.numel() == 0) return out;
  negative_exp_kernel<<<grid_for(out.numel()), 256>>>(source.data<float>(), out.data<float>(), out.numel());
  cuda_detail::check_launch("negative_exp_kernel");
  return out;
}

void add_product_(Tensor& a, const Tensor& b, const Tensor& c) {
  if (a.numel() == 0) return;
  add_product_kernel<<<grid_for(a.numel()), 256>>>(a.data<float>(), b.data<float>(), c.data<float>(), a.numel());
  cuda_detail::check_launch("add_product_kernel");
}

Tensor convert(const Tensor& x, DType dtype) {
  MAMBA_CHECK(dtype == DType::f32 || dtype == DType::bf16, "convert on cuda: target dtype must be f32 or bf16, got ",
              dtype_name(dtype));
  Tensor out = cuda_detail::on_device_as(x, dtype, "convert input");
  return out.raw() == x.raw() ? x.clone() : out;  // always a copy, as on the CPU
}

std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& widths) {
  const int64_t total = x.size(-1);
  MAMBA_CHECK(std::accumulate(widths.begin(), widths.end(), int64_t(0)) == total,
              "split_columns: widths do not sum to ", total, " columns of ", shape_string(x.shape()));
  const int64_t rows = total == 0 ? 0 : x.numel() / total;
  std::vector<Tensor> parts;
  std::vector<ColumnBlock> blocks;
  const size_t elem = dtype_size(x.dtype());
  int64_t offset = 0;
  for (int64_t w : widths) {
    Shape shape = x.shape();
    shape.back() = w;
    parts.push_back(Tensor::empty(shape, x.dtype(), Device::cuda));
    blocks.push_back({parts.back().raw(), w, static_cast<const char*>(x.raw()) + size_t(offset) * elem, total, w});
    offset += w;
  }
  copy_columns(std::move(blocks), rows, elem);
  return parts;
}

void copy_all_(const std::vector<Tensor>& dst, const std::vector<Tensor>& src) {
  // Each pair as one row as long as the tensor.
  std::vector<ColumnBlock> blocks;
  const size_t elem = dst.empty() ? 0 : dtype_size(dst[0].dtype());
  for (size_t i = 0; i < dst.size(); ++i) {
    MAMBA_CHECK(dtype_size(dst[i].dtype()) == elem, "copy_all_: pair ", i, " has ", dtype_size(dst[i].dtype()),
                "-byte elements, pair 0 ", elem, "-byte ones");
    blocks.push_back({dst[i].raw(), dst[i].numel(), src[i].raw(), src[i].numel(), dst[i].numel()});
  }
  copy_columns(std::move(blocks), 1, elem);
}

Tensor concat_columns(const std::vector<Tensor>& parts) {
  Shape shape = parts[0].shape();
  int64_t total = 0;
  for (const Tensor& p : parts) {
    MAMBA_CHECK(
        p.ndim() == parts[0].ndim() && p.dtype() == parts[0].dtype() &&
            p.numel() / std::max<int64_t>(p.size(-1), 1) == parts[0].numel() / std::max<int64_t>(parts[0].size(-1), 1),
        "concat_columns: part ", shape_string(p.shape()), " ", dtype_name(p.dtype()), " does not match part 0 ",
        shape_string(parts[0].shape()), " ", dtype_name(parts[0].dtype()));
    total += p.size(-1);
  }
  shape.back() = total;
  Tensor out = Tensor::empty(shape, parts[0].dtype(), Device::cuda);
  const int64_t rows = total == 0 ? 0 : out.numel() / total;
  const size_t elem = dtype_size(out.dtype());
  std::vector<ColumnBlock> blocks;
  int64_t offset = 0;
  for (const Tensor& p : parts) {
    blocks.push_back({static_cast<char*>(out.raw()) + size_t(offset) * elem, total, p.raw(), p.size(-1), p.size(-1)});
    offset += p.size(-1);
  }
  copy_columns(std::move(blocks), rows, elem);
  return out;
}

}  // namespace mamba::ops::cuda

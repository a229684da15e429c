// CUDA element-wise helpers (ops/elementwise.h). Column splits and joins of row-major matrices
// are strided 2-D copies, done by a kernel in the widest units the layout allows (a strided
// cudaMemcpy2D of rows a few dozen bytes wide goes through the copy engine row by row).
#include <numeric>
#include <type_traits>

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

// dst[r, c] = src[r, c] over a [rows, width] block of row-major matrices whose rows are
// `*_pitch` units U apart.
template <typename U>
__global__ void copy_columns_kernel(U* dst, int64_t dst_pitch, const U* src, int64_t src_pitch, int64_t rows,
                                    int64_t width) {
  const int64_t n = rows * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, c = i - r * width;
    dst[r * dst_pitch + c] = src[r * src_pitch + c];
  }
}

unsigned grid_for(int64_t n) {
  return unsigned(std::min<int64_t>(cuda_detail::blocks_for(n, 256), 8 * int64_t(cuda_detail::multiprocessor_count())));
}

// Copies a [rows, width] block between row-major matrices whose rows are `*_pitch` elements long.
void copy_columns(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t rows, int64_t width,
                  size_t elem) {
  if (rows == 0 || width == 0) return;
  MAMBA_CHECK(elem >= 2 && elem <= 16, "copy_columns: element size ", elem, " is not supported");
  // The widest unit (16 bytes down to the element) that divides every row length, pitch and address.
  const uint64_t layout = uint64_t(width * elem) | uint64_t(dst_pitch * elem) | uint64_t(src_pitch * elem) |
                          reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src);
  size_t unit = 16;
  while (unit > elem && layout % unit != 0) unit /= 2;
  auto launch = [&](auto* typed_dst) {
    using U = std::remove_pointer_t<decltype(typed_dst)>;
    const int64_t per_unit = int64_t(sizeof(U) / elem);  // elements per unit
    copy_columns_kernel<<<grid_for(rows * (width / per_unit)), 256>>>(
        typed_dst, dst_pitch / per_unit, static_cast<const U*>(src), src_pitch / per_unit, rows, width / per_unit);
  };
  switch (unit) {
    case 16:
      launch(static_cast<uint4*>(dst));
      break;
    case 8:
      launch(static_cast<uint2*>(dst));
      break;
    case 4:
      launch(static_cast<uint32_t*>(dst));
      break;
    default:
      launch(static_cast<uint16_t*>(dst));
      break;
  }
  cuda_detail::check_launch("copy_columns_kernel");
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
  int64_t offset = 0;
  for (int64_t w : widths) {
    Shape shape = x.shape();
    shape.back() = w;
    Tensor part = Tensor::empty(shape, x.dtype(), Device::cuda);
    const size_t elem = dtype_size(x.dtype());
    copy_columns(part.raw(), w, static_cast<const char*>(x.raw()) + size_t(offset) * elem, total, rows, w, elem);
    parts.push_back(std::move(part));
    offset += w;
  }
  return parts;
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
  int64_t offset = 0;
  for (const Tensor& p : parts) {
    copy_columns(static_cast<char*>(out.raw()) + size_t(offset) * elem, total, p.raw(), p.size(-1), rows, p.size(-1),
                 elem);
    offset += p.size(-1);
  }
  return out;
}

}  // namespace mamba::ops::cuda

// Tensor: a dense, row-major n-dimensional array on one device.
//
// A tensor is a view (byte offset + shape) into a shared, reference-counted buffer. The
// buffer may be memory the tensor allocated, a memory-mapped checkpoint file, or GPU memory;
// views keep it alive. Views are contiguous (slicing along the first dimension and reshaping keep
// contiguity, anything else copies), with one exception: a 2-D CPU tensor made by
// with_row_stride has padding after each row, which only code that steps rows by row_stride()
// reads (the CPU weight products and the embedding; see LanguageModel::lay_out_for_decode).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace mamba {

using Shape = std::vector<int64_t>;
std::string shape_string(const Shape& s);  // "[2, 33, 64]"
int64_t shape_numel(const Shape& s);

// The dtype whose elements are stored as T (uint16_t also holds the bits of bf16 and f16).
template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, double>) {
    return DType::f64;
  } else if constexpr (std::is_same_v<T, float>) {
    return DType::f32;
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return DType::i64;
  } else if constexpr (std::is_same_v<T, int32_t>) {
    return DType::i32;
  } else {
    static_assert(std::is_same_v<T, uint16_t>, "dtype_of: no dtype stores this element type");
    return DType::u16;
  }
}

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu);
  // A view of memory owned by someone else; `keep_alive` holds that memory (e.g. an mmap).
  static Tensor wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive,
                     Device device = Device::cpu);
  // A CPU tensor holding a copy of `values` converted to `dtype`.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype);

  bool defined() const { return buffer_ != nullptr; }
  // Whether both are views into one buffer (one allocation).
  bool shares_buffer(const Tensor& other) const { return buffer_ == other.buffer_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t size(int dim) const;  // negative dims count from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  // Bytes the elements span in memory (with the row padding of a padded tensor).
  size_t nbytes() const;

  // Contiguous unless made by with_row_stride.
  bool is_contiguous() const { return padded_row_stride_ == 0; }
  // Elements from the start of one row (first-dimension index) to the next.
  int64_t row_stride() const;
  // A copy of this 2-D CPU tensor whose rows start `stride` ≥ size(1) elements apart, the padding
  // zeroed.
  Tensor with_row_stride(int64_t stride) const;

  // The first element of a contiguous tensor (a padded one is refused: use raw_rows).
  void* raw() const;
  // The first element of any tensor, for code that steps rows by row_stride().
  void* raw_rows() const { return static_cast<char*>(buffer_.get()) + offset_; }
  // Typed pointer to a contiguous tensor; checks that T matches the dtype (uint16_t matches bf16,
  // f16 and u16).
  template <typename T>
  T* data() const {
    check_element_type(dtype_of<T>(), sizeof(T));
    return static_cast<T*>(raw());
  }

  // Same buffer, new shape of equal element count (one dim may be -1); contiguous tensors only.
  Tensor view(Shape shape) const;
  // Rows [begin, end) of the first dimension, sharing the buffer.
  Tensor slice(int64_t begin, int64_t end) const;
  // A deep contiguous copy, optionally converted and/or moved.
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor clone() const;
  // Copies `src` (same shape; any dtype or device; padded rows only on the CPU) into this tensor's
  // memory.
  void copy_from(const Tensor& src);
  void zero_();

  // Element access for tests and small host-side work (CPU only, converts through double).
  double item(int64_t flat_index) const;
  std::vector<double> to_double_vector() const;

 private:
  void check_element_type(DType wanted, size_t element_size) const;
  // Row r of a padded tensor or of a contiguous one viewed as [size(0), numel / size(0)].
  char* row_bytes(int64_t r) const;

  std::shared_ptr<void> buffer_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
  int64_t padded_row_stride_ = 0;  // 0: contiguous
};

// The tensor itself when it lives on the CPU, else a host copy (for files and host-side math).
Tensor on_host(const Tensor& t);

// Checks used at op entry points; messages name the tensor.
void check_shape(const Tensor& t, const Shape& expected, const char* name);
void check_dtype(const Tensor& t, DType expected, const char* name);

// Relative L2 error ||a - b|| / ||b|| computed in double (NaN anywhere gives NaN).
double relative_error(const Tensor& a, const Tensor& b);

}  // namespace mamba

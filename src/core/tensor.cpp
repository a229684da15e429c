#include "core/tensor.h"

#include <cmath>
#include <sstream>

namespace mamba {

std::string shape_string(const Shape& s) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << "]";
  return out.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) MAMBA_CHECK(d >= 0, "tensor shape ", shape_string(shape), " has a negative dimension");
  Tensor t;
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  void* p = device_alloc(device, bytes);
  t.buffer_ = std::shared_ptr<void>(p, [device, bytes](void* q) { device_free(device, q, bytes); });
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive, Device device) {
  Tensor t;
  // Aliasing constructor: shares ownership of keep_alive, points at data.
  t.buffer_ = std::shared_ptr<void>(std::move(keep_alive), data);
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype) {
  MAMBA_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(), " values for shape ",
              shape_string(shape));
  Tensor t = empty(shape, dtype);
  convert_elements(values.data(), DType::f64, t.raw(), dtype, values.size());
  return t;
}

int64_t Tensor::size(int dim) const {
  int d = dim < 0 ? dim + ndim() : dim;
  MAMBA_CHECK(d >= 0 && d < ndim(), "dimension ", dim, " out of range for shape ", shape_string(shape_));
  return shape_[size_t(d)];
}

size_t Tensor::nbytes() const {
  const int64_t elements = is_contiguous() ? numel() : shape_[0] * padded_row_stride_;
  return size_t(elements) * dtype_size(dtype_);
}

int64_t Tensor::row_stride() const {
  if (!is_contiguous()) return padded_row_stride_;
  return ndim() == 0 ? 1 : shape_[0] == 0 ? 0 : numel() / shape_[0];
}

char* Tensor::row_bytes(int64_t r) const {
  return static_cast<char*>(raw_rows()) + size_t(r * row_stride()) * dtype_size(dtype_);
}

void* Tensor::raw() const {
  MAMBA_CHECK(is_contiguous(), "a tensor ", shape_string(shape_), " with padded rows (", padded_row_stride_,
              " elements apart) reached code that reads it as contiguous");
  return raw_rows();
}

Tensor Tensor::with_row_stride(int64_t stride) const {
  MAMBA_CHECK(ndim() == 2 && device_ == Device::cpu && stride >= shape_[1], "with_row_stride(", stride,
              "): needs a 2-D CPU tensor with rows of at most that many elements, got ", shape_string(shape_), " on ",
              device_name(device_));
  Tensor out = zeros({shape_[0], stride}, dtype_);
  out.shape_ = shape_;
  out.padded_row_stride_ = stride == shape_[1] ? 0 : stride;
  out.copy_from(*this);
  return out;
}

void Tensor::check_element_type(DType wanted, size_t element_size) const {
  bool ok = wanted == dtype_ ||
            (element_size == 2 && (dtype_ == DType::bf16 || dtype_ == DType::f16 || dtype_ == DType::u16));
  MAMBA_CHECK(ok, "tensor of dtype ", dtype_name(dtype_), " accessed as ", dtype_name(wanted));
}

Tensor Tensor::view(Shape shape) const {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MAMBA_CHECK(infer < 0, "view: more than one -1 in ", shape_string(shape));
      infer = int(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[size_t(infer)] = known == 0 ? 0 : numel() / known;
  MAMBA_CHECK(shape_numel(shape) == numel(), "view: cannot view ", shape_string(shape_), " as ", shape_string(shape));
  MAMBA_CHECK(is_contiguous(), "view: the tensor ", shape_string(shape_), " has padded rows");
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  MAMBA_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice [", begin, ", ", end,
              ") out of range for shape ", shape_string(shape_));
  Tensor t = *this;
  t.offset_ += size_t(begin * row_stride()) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor out = empty(shape_, dtype, device_);
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  Tensor out = empty(shape_, dtype_, device);
  out.copy_from(*this);
  return out;
}

Tensor Tensor::clone() const { return to(dtype_); }

Tensor on_host(const Tensor& t) { return t.device() == Device::cpu ? t : t.to(Device::cpu); }

void Tensor::copy_from(const Tensor& src) {
  MAMBA_CHECK(src.numel() == numel(), "copy_from: shape ", shape_string(src.shape_), " into ", shape_string(shape_));
  if (!is_contiguous() || !src.is_contiguous()) {
    MAMBA_CHECK(src.shape_ == shape_ && src.device_ == Device::cpu && device_ == Device::cpu, "copy_from: shape ",
                shape_string(src.shape_), " on ", device_name(src.device_), " into ", shape_string(shape_), " on ",
                device_name(device_), ": padded rows are copied between CPU tensors of one shape only");
    for (int64_t r = 0; r < shape_[0]; ++r)
      convert_elements(src.row_bytes(r), src.dtype_, row_bytes(r), dtype_, size_t(shape_[1]));
    return;
  }
  if (src.dtype_ == dtype_) {
    device_copy(raw(), device_, src.raw(), src.device_, nbytes());
    return;
  }
  // Conversions run on the host; device tensors are staged through CPU memory.
  Tensor host_src = src.device_ == Device::cpu ? src : src.to(Device::cpu);
  if (device_ == Device::cpu) {
    convert_elements(host_src.raw(), host_src.dtype_, raw(), dtype_, size_t(numel()));
  } else {
    Tensor staged = empty(shape_, dtype_, Device::cpu);
    convert_elements(host_src.raw(), host_src.dtype_, staged.raw(), dtype_, size_t(numel()));
    device_copy(raw(), device_, staged.raw(), Device::cpu, nbytes());
  }
}

void Tensor::zero_() { device_memset_zero(raw_rows(), device_, nbytes()); }

double Tensor::item(int64_t flat_index) const {
  MAMBA_CHECK(device_ == Device::cpu, "item(): tensor is on ", device_name(device_));
  MAMBA_CHECK(flat_index >= 0 && flat_index < numel(), "item(", flat_index, ") out of range for ",
              shape_string(shape_));
  const int64_t offset =
      is_contiguous() ? flat_index : flat_index / shape_[1] * padded_row_stride_ + flat_index % shape_[1];
  double v;
  convert_elements(static_cast<const char*>(raw_rows()) + size_t(offset) * dtype_size(dtype_), dtype_, &v, DType::f64,
                   1);
  return v;
}

std::vector<double> Tensor::to_double_vector() const {
  if (!is_contiguous()) return clone().to_double_vector();
  Tensor host = device_ == Device::cpu ? *this : to(Device::cpu);
  std::vector<double> v(static_cast<size_t>(numel()));
  convert_elements(host.raw(), dtype_, v.data(), DType::f64, v.size());
  return v;
}

void check_shape(const Tensor& t, const Shape& expected, const char* name) {
  MAMBA_CHECK(t.defined(), name, ": tensor is missing");
  MAMBA_CHECK(t.shape() == expected, name, ": expected shape ", shape_string(expected), ", got ",
              shape_string(t.shape()));
}

void check_dtype(const Tensor& t, DType expected, const char* name) {
  MAMBA_CHECK(t.defined(), name, ": tensor is missing");
  MAMBA_CHECK(t.dtype() == expected, name, ": expected dtype ", dtype_name(expected), ", got ", dtype_name(t.dtype()));
}

double relative_error(const Tensor& a, const Tensor& b) {
  MAMBA_CHECK(a.numel() == b.numel(), "relative_error: shapes ", shape_string(a.shape()), " and ",
              shape_string(b.shape()), " differ");
  std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff += (x[i] - y[i]) * (x[i] - y[i]);
    norm += y[i] * y[i];
  }
  if (std::isnan(diff) || std::isnan(norm)) return std::nan("");
  if (norm == 0) return diff == 0 ? 0 : INFINITY;
  return std::sqrt(diff / norm);
}

}  // namespace mamba

#include "ops/elementwise.h"

#include <string>

#include "ops/dispatch.h"

namespace mamba::ops {

void add_(Tensor& a, const Tensor& b) {
  MAMBA_CHECK(a.defined(), "add_: tensor a is missing");
  check_shape(b, a.shape(), "add_ operand b");
  check_device(b, a.device(), "add_ operand b");
  MAMBA_OPS_DISPATCH(a.device(), "add_", add_(a, b));
}

void scale_(Tensor& a, double s) {
  MAMBA_CHECK(a.defined(), "scale_: tensor is missing");
  MAMBA_OPS_DISPATCH(a.device(), "scale_", scale_(a, s));
}

Tensor convert(const Tensor& x, DType dtype) {
  MAMBA_CHECK(x.defined(), "convert: tensor is missing");
  MAMBA_OPS_DISPATCH(x.device(), "convert", convert(x, dtype));
}

Tensor negative_exp(const Tensor& x) {
  MAMBA_CHECK(x.defined(), "negative_exp: tensor is missing");
  MAMBA_CHECK(dtype_is_float(x.dtype()), "negative_exp: expected a float dtype, got ", dtype_name(x.dtype()));
  MAMBA_OPS_DISPATCH(x.device(), "negative_exp", negative_exp(x));
}

void add_product_(Tensor& a, const Tensor& b, const Tensor& c) {
  MAMBA_CHECK(a.defined(), "add_product_: tensor a is missing");
  for (const Tensor* t : {static_cast<const Tensor*>(&a), &b, &c}) check_dtype(*t, DType::f32, "add_product_ operand");
  check_shape(b, a.shape(), "add_product_ operand b");
  check_shape(c, a.shape(), "add_product_ operand c");
  check_device(b, a.device(), "add_product_ operand b");
  check_device(c, a.device(), "add_product_ operand c");
  MAMBA_OPS_DISPATCH(a.device(), "add_product_", add_product_(a, b, c));
}

std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& widths) {
  MAMBA_CHECK(x.defined(), "split_columns: input is missing");
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  if (x.ndim() >= 1 && x.numel() == x.size(-1) && total == x.size(-1) && total > 0) {
    // One row: its pieces are contiguous, so views do (decode at batch 1 copies nothing).
    std::vector<Tensor> parts;
    Tensor flat = x.view({total});
    int64_t offset = 0;
    for (int64_t w : widths) {
      Shape shape = x.shape();
      shape.back() = w;
      parts.push_back(flat.slice(offset, offset + w).view(shape));
      offset += w;
    }
    return parts;
  }
  MAMBA_OPS_DISPATCH(x.device(), "split_columns", split_columns(x, widths));
}

Tensor concat_columns(const std::vector<Tensor>& parts) {
  MAMBA_CHECK(!parts.empty() && parts[0].defined(), "concat_columns: no parts given");
  for (size_t i = 1; i < parts.size(); ++i)
    check_device(parts[i], parts[0].device(), ("concat_columns part " + std::to_string(i)).c_str());
  MAMBA_OPS_DISPATCH(parts[0].device(), "concat_columns", concat_columns(parts));
}

void copy_all_(const std::vector<Tensor>& dst, const std::vector<Tensor>& src) {
  MAMBA_CHECK(dst.size() == src.size(), "copy_all_: ", dst.size(), " destinations for ", src.size(), " sources");
  if (dst.empty()) return;
  for (size_t i = 0; i < dst.size(); ++i) {
    const std::string what = "copy_all_ pair " + std::to_string(i);
    MAMBA_CHECK(dst[i].defined() && src[i].defined(), what, ": a tensor is missing");
    MAMBA_CHECK(dst[i].is_contiguous() && src[i].is_contiguous(), what, ": tensors must be contiguous");
    check_shape(src[i], dst[i].shape(), (what + " source").c_str());
    check_dtype(src[i], dst[i].dtype(), (what + " source").c_str());
    check_device(dst[i], dst[0].device(), (what + " destination").c_str());
    check_device(src[i], dst[0].device(), (what + " source").c_str());
  }
  MAMBA_OPS_DISPATCH(dst[0].device(), "copy_all_", copy_all_(dst, src));
}

}  // namespace mamba::ops

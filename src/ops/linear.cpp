#include "ops/linear.h"

#include "ops/dispatch.h"
#include "ops/elementwise.h"

namespace mamba::ops {

void check_linear_inputs(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  MAMBA_CHECK(x.defined(), "linear input x: tensor is missing");
  MAMBA_CHECK(weight.defined() && weight.ndim() == 2, "linear weight: expected a 2-D tensor [N, K]",
              weight.defined() ? ", got shape " + shape_string(weight.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(dtype_is_float(x.dtype()), "linear input x: expected a float dtype, got ", dtype_name(x.dtype()));
  MAMBA_CHECK(dtype_is_float(weight.dtype()), "linear weight: expected a float dtype, got ",
              dtype_name(weight.dtype()));
  int64_t N = weight.size(0), K = weight.size(1);
  MAMBA_CHECK(x.ndim() >= 1 && x.size(-1) == K, "linear input x: expected shape [..., ", K, "] to match weight shape ",
              shape_string(weight.shape()), ", got ", shape_string(x.shape()));
  if (bias.defined()) {
    check_shape(bias, {N}, "linear bias");
    MAMBA_CHECK(dtype_is_float(bias.dtype()), "linear bias: expected a float dtype, got ", dtype_name(bias.dtype()));
  }
  check_device(weight, x.device(), "linear weight");
  check_device(bias, x.device(), "linear bias");
}

void check_linear_backward_inputs(const Tensor& x, const Tensor& weight, const Tensor& dy, const Tensor* dweight,
                                  const Tensor* dbias, const Tensor* dx_into) {
  check_linear_inputs(x, weight, {});
  Shape dy_shape = x.shape();
  dy_shape.back() = weight.size(0);
  check_shape(dy, dy_shape, "linear output gradient dy");
  check_device(dy, x.device(), "linear output gradient dy");
  if (dweight) {
    check_shape(*dweight, weight.shape(), "linear weight gradient");
    check_device(*dweight, x.device(), "linear weight gradient");
  }
  if (dbias) {
    check_shape(*dbias, {weight.size(0)}, "linear bias gradient");
    check_device(*dbias, x.device(), "linear bias gradient");
  }
  if (dx_into) {
    check_shape(*dx_into, x.shape(), "linear input gradient dx_into");
    check_device(*dx_into, x.device(), "linear input gradient dx_into");
  }
}

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear_inputs(x, weight, bias);
  MAMBA_OPS_DISPATCH(x.device(), "linear_forward", linear_forward(x, weight, bias));
}

namespace {

// Whether each column piece gets products of its own over its rows of the weight.
bool all_wide(const std::vector<int64_t>& widths) {
  for (int64_t width : widths)
    if (width < kWidePiece || width % 8 != 0) return false;
  return true;
}

// Rows [begin, begin + count) of a weight (or bias, or their gradients): a view, as they are contiguous.
Tensor rows_of(const Tensor& t, int64_t begin, int64_t count) {
  return t.defined() ? t.slice(begin, begin + count) : Tensor{};
}

}  // namespace

int64_t decode_row_stride(const Tensor& weight) {
  MAMBA_CHECK(weight.ndim() == 2, "decode_row_stride: expected a weight [N, K], got ", shape_string(weight.shape()));
  const int64_t columns = weight.size(1), element = int64_t(dtype_size(weight.dtype()));
  constexpr int64_t kCacheLine = 64;
  if (weight.device() != Device::cpu || columns * element % 2048 != 0) return columns;
  return columns + kCacheLine / element;
}

std::vector<Tensor> linear_forward_split(const Tensor& x, const Tensor& weight, const std::vector<int64_t>& widths,
                                         const Tensor& bias) {
  check_linear_inputs(x, weight, bias);
  int64_t total = 0;
  for (int64_t width : widths) {
    MAMBA_CHECK(width >= 0, "linear_forward_split: negative width ", width);
    total += width;
  }
  MAMBA_CHECK(total == weight.size(0), "linear_forward_split: widths sum to ", total, ", the weight has ",
              weight.size(0), " rows");
#ifdef MAMBACPP_CUDA
  if (x.device() == Device::cuda && x.ndim() == 2)
    if (auto pieces = cuda::linear_forward_split(x, weight, bias, widths)) return *pieces;
#endif
  // One row of x (decode at batch 1): one product, whose pieces split_columns returns as views; on
  // the CPU each product is a pool run of its own, with its set-up and its threads' wait at the end.
  const bool one_row = x.numel() == weight.size(1);
  const bool few_cuda_rows =
      x.device() == Device::cuda && weight.size(1) > 0 && x.numel() / weight.size(1) <= kOneProductCudaRows;
  if (!all_wide(widths) || one_row || few_cuda_rows) return split_columns(linear_forward(x, weight, bias), widths);
  std::vector<Tensor> pieces;
  int64_t begin = 0;
  for (int64_t width : widths) {
    pieces.push_back(linear_forward(x, rows_of(weight, begin, width), rows_of(bias, begin, width)));
    begin += width;
  }
  return pieces;
}

Tensor linear_backward_split(const Tensor& x, const Tensor& weight, const std::vector<Tensor>& dy_pieces,
                             Tensor* dweight, Tensor* dbias, Tensor* dx_into, bool overwrite_dweight) {
  std::vector<int64_t> widths;
  for (const Tensor& piece : dy_pieces) {
    MAMBA_CHECK(piece.defined() && piece.ndim() >= 1, "linear_backward_split: an output gradient piece is missing");
    widths.push_back(piece.size(-1));
  }
  if (!all_wide(widths))
    return linear_backward(x, weight, concat_columns(dy_pieces), dweight, dbias, dx_into, overwrite_dweight);
  int64_t total = 0;
  for (int64_t width : widths) total += width;
  MAMBA_CHECK(total == weight.size(0), "linear_backward_split: the pieces have ", total, " columns, the weight ",
              weight.size(0), " rows");
  Tensor dx = dx_into ? *dx_into : Tensor{};
  int64_t begin = 0;
  for (size_t i = 0; i < dy_pieces.size(); ++i) {
    Tensor dweight_rows = dweight ? rows_of(*dweight, begin, widths[i]) : Tensor{};
    Tensor dbias_rows = dbias ? rows_of(*dbias, begin, widths[i]) : Tensor{};
    dx = linear_backward(x, rows_of(weight, begin, widths[i]), dy_pieces[i], dweight ? &dweight_rows : nullptr,
                         dbias ? &dbias_rows : nullptr, dx.defined() ? &dx : nullptr, overwrite_dweight);
    begin += widths[i];
  }
  return dx;
}

Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias,
                       Tensor* dx_into, bool overwrite_dweight) {
  check_linear_backward_inputs(x, weight, dy, dweight, dbias, dx_into);
  if (x.device() == Device::cuda) {
#ifdef MAMBACPP_CUDA
    return cuda::linear_backward(x, weight, dy, dweight, dbias, dx_into, overwrite_dweight);
#else
    fail_without_cuda("linear_backward");
#endif
  }
  if (overwrite_dweight && dweight) dweight->zero_();  // the CPU product only accumulates
  Tensor dx = cpu::linear_backward(x, weight, dy, dweight, dbias);
  if (!dx_into) return dx;
  add_(*dx_into, dx);
  return *dx_into;
}

}  // namespace mamba::ops

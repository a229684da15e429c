#include "ops/elementwise.h"

#include <cmath>
#include <cstring>
#include <numeric>

#include "core/threads.h"
#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

namespace {

// Element-wise loops split into ranges of at least 16 Ki elements.
constexpr int64_t kMinRange = int64_t(1) << 14;

int ranges_for(int64_t n) { return int(std::max<int64_t>(1, n / kMinRange)); }

}  // namespace

void add_(Tensor& a, const Tensor& b) {
  check_f32_activation(a, "add_ tensor a");
  check_f32_activation(b, "add_ operand b");
  check_shape(b, a.shape(), "add_ operand b");
  float* ap = a.data<float>();
  const float* bp = b.data<float>();
  parallel_for(a.numel(), ranges_for(a.numel()), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) ap[i] += bp[i];
  });
}

void scale_(Tensor& a, double s) {
  check_f32_activation(a, "scale_ tensor");
  float* ap = a.data<float>();
  const float factor = float(s);
  parallel_for(a.numel(), ranges_for(a.numel()), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) ap[i] *= factor;
  });
}

Tensor convert(const Tensor& x, DType dtype) { return x.to(dtype); }

Tensor negative_exp(const Tensor& x) {
  const Tensor source = x.to(DType::f32);
  Tensor out = Tensor::empty(x.shape(), DType::f32);
  const float* in = source.data<float>();
  float* y = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) y[i] = -std::exp(in[i]);
  return out;
}

void add_product_(Tensor& a, const Tensor& b, const Tensor& c) {
  float* ap = a.data<float>();
  const float *bp = b.data<float>(), *cp = c.data<float>();
  parallel_for(a.numel(), ranges_for(a.numel()), [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) ap[i] += bp[i] * cp[i];
  });
}

void copy_all_(const std::vector<Tensor>& dst, const std::vector<Tensor>& src) {
  for (size_t i = 0; i < dst.size(); ++i) Tensor(dst[i]).copy_from(src[i]);  // a handle on the same buffer
}

std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& widths) {
  MAMBA_CHECK(x.defined() && x.ndim() >= 1, "split_columns: input must have at least one dimension");
  const int64_t total = x.size(-1);
  for (int64_t w : widths) MAMBA_CHECK(w >= 0, "split_columns: width ", w, " is negative");
  const int64_t sum = std::accumulate(widths.begin(), widths.end(), int64_t(0));
  MAMBA_CHECK(sum == total, "split_columns: widths sum to ", sum, " but the input ", shape_string(x.shape()), " has ",
              total, " columns");
  const int64_t rows = total == 0 ? 0 : x.numel() / total;
  const size_t elem = dtype_size(x.dtype());
  const auto* src = static_cast<const char*>(x.raw());
  std::vector<Tensor> parts;
  int64_t offset = 0;
  for (int64_t w : widths) {
    Shape shape = x.shape();
    shape.back() = w;
    Tensor part = Tensor::empty(shape, x.dtype());
    auto* dst = static_cast<char*>(part.raw());
    parallel_for(rows, ranges_for(rows * w), [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r)
        std::memcpy(dst + size_t(r * w) * elem, src + size_t(r * total + offset) * elem, size_t(w) * elem);
    });
    parts.push_back(std::move(part));
    offset += w;
  }
  return parts;
}

Tensor concat_columns(const std::vector<Tensor>& parts) {
  MAMBA_CHECK(!parts.empty() && parts[0].defined() && parts[0].ndim() >= 1,
              "concat_columns: expected at least one tensor with at least one dimension");
  const Tensor& first = parts[0];
  Shape leading = first.shape();
  leading.pop_back();
  int64_t total = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    MAMBA_CHECK(p.defined() && p.ndim() == first.ndim(), "concat_columns: part ", i, " has shape ",
                p.defined() ? shape_string(p.shape()) : std::string("(missing)"), ", expected ", first.ndim(),
                " dimensions like part 0 ", shape_string(first.shape()));
    Shape lead = p.shape();
    lead.pop_back();
    MAMBA_CHECK(lead == leading, "concat_columns: part ", i, " has shape ", shape_string(p.shape()),
                ", its leading dimensions differ from part 0 ", shape_string(first.shape()));
    MAMBA_CHECK(p.dtype() == first.dtype(), "concat_columns: part ", i, " has dtype ", dtype_name(p.dtype()),
                ", part 0 has ", dtype_name(first.dtype()));
    total += p.size(-1);
  }
  Shape shape = leading;
  shape.push_back(total);
  Tensor out = Tensor::empty(shape, first.dtype());
  const int64_t rows = shape_numel(leading);
  const size_t elem = dtype_size(first.dtype());
  auto* dst = static_cast<char*>(out.raw());
  int64_t offset = 0;
  for (const Tensor& p : parts) {
    const int64_t w = p.size(-1);
    const auto* src = static_cast<const char*>(p.raw());
    parallel_for(rows, ranges_for(rows * w), [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r)
        std::memcpy(dst + size_t(r * total + offset) * elem, src + size_t(r * w) * elem, size_t(w) * elem);
    });
    offset += w;
  }
  return out;
}

}  // namespace mamba::ops::cpu

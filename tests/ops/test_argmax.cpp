#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"
#include "ops/argmax.h"

namespace mamba::ops {
namespace {

// The first maximum wins ties, NaN is never chosen, and only the first `columns` entries count.
TEST(OpsArgmax, FirstMaximumSkippingNaN) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = Tensor::from_vector({1, 5, 5, 2,          //
                                        nan, -1, -3, nan,    //
                                        nan, nan, nan, nan,  //
                                        0, 1, 2, 9},
                                       {4, 4}, DType::f32);
  const Tensor all = argmax_rows(x);
  EXPECT_EQ(all.dtype(), DType::i32);
  EXPECT_EQ(all.to_double_vector(), (std::vector<double>{1, 1, 0, 3}));
  EXPECT_EQ(argmax_rows(x, 3).to_double_vector(), (std::vector<double>{1, 1, 0, 2}));
  EXPECT_THROW(argmax_rows(x, 5), Error);

  // The same ids into one or two given tensors (a row of a larger result among them).
  Tensor result = Tensor::zeros({3, 4}, DType::i32), input = Tensor::zeros({4}, DType::i32);
  argmax_rows_into(x, 3, {result.slice(1, 2).view({4}), input});
  EXPECT_EQ(result.to_double_vector(), (std::vector<double>{0, 0, 0, 0, 1, 1, 0, 2, 0, 0, 0, 0}));
  EXPECT_EQ(input.to_double_vector(), (std::vector<double>{1, 1, 0, 2}));
  EXPECT_THROW(argmax_rows_into(x, -1, {}), Error);
  EXPECT_THROW(argmax_rows_into(x, -1, {Tensor::zeros({3}, DType::i32)}), Error);
  EXPECT_THROW(argmax_rows_into(x, -1, {Tensor::zeros({4}, DType::f32)}), Error);
}

// The vectorised CPU path against the reference on rows that put ties, NaN, ±∞ and signed
// zeros on both sides of its 16-wide blocks, at widths with and without a partial block.
TEST(OpsArgmax, CpuMatchesReference) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  Rng rng(5);
  for (int64_t width : {1, 15, 16, 17, 50, 50280}) {
    const int64_t rows = 9;
    std::vector<double> values(size_t(rows * width));
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t j = 0; j < width; ++j) {
        double v = std::round(rng.uniform(-4, 4));  // few distinct values: ties everywhere
        const double pick = rng.uniform(0, 1);
        if (m == 1 || pick < 0.1) v = nan;  // row 1 has no number at all
        if (m == 2 && pick > 0.5) v = -inf;
        if (m == 3) v = pick < 0.5 ? -0.0 : 0.0;
        if (m == 4 && j == width - 1) v = inf;  // the largest in the last, possibly partial block
        values[size_t(m * width + j)] = v;
      }
    const Tensor x = Tensor::from_vector(values, {rows, width}, DType::f32);
    for (int64_t columns : {int64_t(-1), width, (width + 1) / 2})
      EXPECT_EQ(cpu::argmax_rows(x, columns).to_double_vector(), ref::argmax_rows(x, columns).to_double_vector())
          << "width " << width << ", columns " << columns;
  }
}

}  // namespace
}  // namespace mamba::ops

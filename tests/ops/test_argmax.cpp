#include <gtest/gtest.h>

#include <cmath>
#include <limits>

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
}

}  // namespace
}  // namespace mamba::ops

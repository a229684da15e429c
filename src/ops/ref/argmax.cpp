#include "ops/argmax.h"

#include <vector>

namespace mamba::ops::ref {

Tensor argmax_rows(const Tensor& x, int64_t columns) {
  check_argmax_inputs(x, columns);
  const int64_t rows = x.size(0), width = x.size(1), n = columns < 0 ? width : columns;
  const std::vector<double> v = x.to_double_vector();
  Tensor out = Tensor::empty({rows}, DType::i32);
  for (int64_t m = 0; m < rows; ++m) {
    const double* row = v.data() + m * width;
    int64_t best = 0;
    bool found = false;
    for (int64_t j = 0; j < n; ++j)
      if (row[j] == row[j] && (!found || row[j] > row[best])) best = j, found = true;
    out.data<int32_t>()[m] = int32_t(best);
  }
  return out;
}

}  // namespace mamba::ops::ref

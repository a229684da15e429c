// Helpers for the GPU tests: random host data, copies to the GPU in a chosen dtype, and the
// relative L2 error of a GPU result against float64 values. Reference values are computed from
// the inputs as the GPU sees them (after rounding to bf16), so only the kernel's own error counts.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/device.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace mamba::cuda_test {

#define SKIP_WITHOUT_GPU() \
  if (!::mamba::cuda_available()) GTEST_SKIP() << "no CUDA GPU available"

inline std::vector<double> random_vector(Rng& rng, int64_t n, double lo, double hi) {
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = rng.uniform(lo, hi);
  return v;
}

// The values rounded to `dtype` (what the GPU will read), returned as doubles.
inline std::vector<double> rounded(const std::vector<double>& v, DType dtype) {
  return Tensor::from_vector(v, {int64_t(v.size())}, dtype).to_double_vector();
}

inline Tensor on_gpu(const std::vector<double>& v, const Shape& shape, DType dtype) {
  return Tensor::from_vector(v, shape, dtype).to(Device::cuda);
}

// ‖gpu − ref‖ / ‖ref‖ in double; NaN if anything is NaN.
inline double error_vs(const Tensor& gpu, const std::vector<double>& ref) {
  EXPECT_EQ(gpu.numel(), int64_t(ref.size()));
  return relative_error(gpu, Tensor::from_vector(ref, {int64_t(ref.size())}, DType::f64));
}

inline double tolerance(DType dtype) { return dtype == DType::f32 ? 1e-5 : 1e-2; }

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace mamba::cuda_test

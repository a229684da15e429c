// Helpers for the op tests: random tensors, Σ a·b, central finite differences, and checks that a
// call throws mamba::Error mentioning a given text.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace mamba::testing {

// Uniform values in [lo, hi) converted to `dtype`.
inline Tensor random_tensor(const Shape& shape, DType dtype, Rng& rng, double lo = -1, double hi = 1) {
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = rng.uniform(lo, hi);
  return Tensor::from_vector(v, shape, dtype);
}

// Σ a·b in double (shapes must hold the same number of elements).
inline double dot(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  EXPECT_EQ(x.size(), y.size());
  double sum = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) sum += x[i] * y[i];
  return sum;
}

// d loss / d t for every element of the f64 tensor t, by central differences (t is restored).
inline Tensor numeric_gradient(Tensor& t, const std::function<double()>& loss, double h = 1e-6) {
  Tensor grad = Tensor::empty(t.shape(), DType::f64);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double saved = p[i];
    p[i] = saved + h;
    const double up = loss();
    p[i] = saved - h;
    const double down = loss();
    p[i] = saved;
    grad.data<double>()[i] = (up - down) / (2 * h);
  }
  return grad;
}

}  // namespace mamba::testing

// Expects `statement` to throw mamba::Error whose message contains `text`.
#define EXPECT_ERROR_MENTIONS(statement, text)                                                      \
  do {                                                                                              \
    try {                                                                                           \
      statement;                                                                                    \
      ADD_FAILURE() << "expected mamba::Error mentioning \"" << (text) << "\", nothing was thrown"; \
    } catch (const ::mamba::Error& error) {                                                         \
      EXPECT_NE(std::string(error.what()).find(text), std::string::npos) << error.what();           \
    }                                                                                               \
  } while (0)

#include "ops/cpu/vec.h"

#include <algorithm>
#include <vector>

#include "core/threads.h"

namespace mamba::ops::cpu {

void widen_to_f32(const void* src, DType dtype, float* dst, int64_t n) {
  if (dtype == DType::f32) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
    return;
  }
  MAMBA_CHECK(dtype == DType::bf16 || dtype == DType::f16, "widen_to_f32: unsupported dtype ", dtype_name(dtype));
  auto bits = static_cast<const uint16_t*>(src);
  int64_t i = 0;
#ifdef MAMBA_CPU_AVX512
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + i));
    __m512 f = dtype == DType::bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                                    : _mm512_cvtph_ps(h);
    _mm512_storeu_ps(dst + i, f);
  }
#endif
  if (dtype == DType::bf16) {
    for (; i < n; ++i) dst[i] = bf16_to_f32(bits[i]);
  } else {
    for (; i < n; ++i) dst[i] = f16_to_f32(bits[i]);
  }
}

void check_f32_activation(const Tensor& t, const char* name) {
  MAMBA_CHECK(t.defined(), name, ": tensor is missing");
  MAMBA_CHECK(t.dtype() == DType::f32, name, ": the CPU kernels take f32 activations, got ", dtype_name(t.dtype()));
}

void check_float_weight(const Tensor& t, const char* name) {
  MAMBA_CHECK(t.defined(), name, ": tensor is missing");
  DType d = t.dtype();
  MAMBA_CHECK(d == DType::f32 || d == DType::bf16 || d == DType::f16, name, ": expected dtype f32, bf16 or f16, got ",
              dtype_name(d));
}

Tensor parameter_as_f32(const Tensor& t) {
  if (!t.defined() || t.dtype() == DType::f32) return t;
  Tensor out = Tensor::empty(t.shape(), DType::f32);
  widen_to_f32(t.raw(), t.dtype(), out.data<float>(), t.numel());
  return out;
}

void add_column_sums(const float* a, int64_t rows, int64_t cols, float* sums) {
  int max_ranges = int(std::max<int64_t>(1, cols / 64));
  parallel_for(cols, max_ranges, [&](int64_t c0, int64_t c1, int) {
    std::vector<double> acc(size_t(c1 - c0), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = a + r * cols;
      for (int64_t c = c0; c < c1; ++c) acc[size_t(c - c0)] += row[c];
    }
    for (int64_t c = c0; c < c1; ++c) sums[c] += float(acc[size_t(c - c0)]);
  });
}

}  // namespace mamba::ops::cpu

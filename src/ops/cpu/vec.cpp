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

#ifdef MAMBA_CPU_AVX512
namespace {

// e^x for 16 lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial (Cephes expf
// coefficients), then scaled by 2^n. Inputs are clamped to [−104, 89], where e^x is 0 or inf in
// float32 anyway; the clamp keeps NaN (max/min return their second operand on NaN).
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

}  // namespace
#endif

void exp_shifted_inplace(float* v, int64_t n, float shift) {
  int64_t i = 0;
#ifdef MAMBA_CPU_AVX512
  const __m512 s = _mm512_set1_ps(shift);
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(v + i, exp16(_mm512_sub_ps(_mm512_loadu_ps(v + i), s)));
#endif
  for (; i < n; ++i) v[i] = std::exp(v[i] - shift);
}

void silu_inplace(float* v, int64_t n) {
#ifdef MAMBA_CPU_AVX512
  // The tail takes the same vector path (masked), so each element's result does not depend on
  // where a range starts: a step split into chunks differently gives the same bits.
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(mask, v + i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    _mm512_mask_storeu_ps(v + i, mask, _mm512_div_ps(x, _mm512_add_ps(one, e)));
  }
#else
  for (int64_t i = 0; i < n; ++i) v[i] = silu(v[i]);
#endif
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

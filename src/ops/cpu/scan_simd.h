// 16-lane float vectors for the CPU selective scan, and the vectorised exp/softplus/sigmoid it needs.
//
// Vec16 is a GCC vector of 16 floats. With AVX-512 (F, BW, VL) it is one zmm register and the
// few operations plain vector arithmetic cannot express use intrinsics; elsewhere the same code is
// built from GCC vector extensions, which the compiler lowers to two ymm (AVX2) or four xmm.
//
// exp2(x) = 2^k · 2^f with k = round(x), f = x − k ∈ [−½, ½] exact, and 2^f = Σⱼ (f·ln2)ʲ/j! to
// degree 7 (truncation < 6e-9 relative, so the result is within ~1 ulp of the correctly rounded
// value). exp(x) reduces with a two-part ln 2 (Cody–Waite) before the same polynomial.
// log1p(y) for y ∈ [0, 1] uses s = y/(2+y): log1p(y) = 2·atanh(s) = 2s·Σⱼ s²ʲ/(2j+1), with no
// cancellation for small y. softplus(x) = max(x, 0) + log1p(exp(−|x|)) (equals x in float32 for
// x > 20, as the reference's threshold demands).
#pragma once
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// GCC 12 warns (falsely, GCC bug 105593) about the placeholder `__Y` inside these intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define MAMBACPP_SCAN_AVX512 1
#else
// Without AVX-512, 64-byte vectors are passed in memory between non-inlined calls; GCC notes that.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace mamba::ops::cpu::simd {

constexpr int kLanes = 16;
using Vec16 = float __attribute__((vector_size(64)));
using Int16x = int32_t __attribute__((vector_size(64)));
using Uint16x = uint32_t __attribute__((vector_size(64)));

[[gnu::always_inline]] inline Vec16 broadcast(float x) { return Vec16{} + x; }

[[gnu::always_inline]] inline Vec16 fma(Vec16 a, Vec16 b, Vec16 c) {
#ifdef MAMBACPP_SCAN_AVX512
  return _mm512_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}

#ifndef MAMBACPP_SCAN_AVX512
// GCC lowers comparisons of vectors wider than the target's (64 bytes on AVX2) to scalar code,
// so the fallback compares 8-lane halves, which AVX2 does natively.
using Vec8 = float __attribute__((vector_size(32)));
template <typename Op>
[[gnu::always_inline]] inline Vec16 per_half(Vec16 a, Vec16 b, Op op) {
  Vec8 a_halves[2], b_halves[2], results[2];
  std::memcpy(a_halves, &a, sizeof(a));
  std::memcpy(b_halves, &b, sizeof(b));
  for (int i = 0; i < 2; ++i) results[i] = op(a_halves[i], b_halves[i]);
  Vec16 result;
  std::memcpy(&result, results, sizeof(result));
  return result;
}
#endif

[[gnu::always_inline]] inline Vec16 max(Vec16 a, Vec16 b) {
#ifdef MAMBACPP_SCAN_AVX512
  return _mm512_max_ps(a, b);
#else
  return per_half(a, b, [](Vec8 x, Vec8 y) { return x > y ? x : y; });
#endif
}
[[gnu::always_inline]] inline Vec16 min(Vec16 a, Vec16 b) {
#ifdef MAMBACPP_SCAN_AVX512
  return _mm512_min_ps(a, b);
#else
  return per_half(a, b, [](Vec8 x, Vec8 y) { return x < y ? x : y; });
#endif
}
[[gnu::always_inline]] inline Vec16 abs(Vec16 a) { return Vec16(Int16x(a) & 0x7fffffff); }

// Loads/stores of `count` ≤ 16 lanes of float32 or bfloat16 (uint16_t bits); missing lanes load as 0.
// Whole vectors go unmasked: on these AMD cores masked loads and stores cost several times plain
// ones (the scan forward of 4 × 1024 positions ran 2.3× faster once they went, docs/perf/cpu_model.md v6).
[[gnu::always_inline]] inline Vec16 load(const float* p, int count) {
#ifdef MAMBACPP_SCAN_AVX512
  if (count == kLanes) return _mm512_loadu_ps(p);
  return _mm512_maskz_loadu_ps(__mmask16((1u << count) - 1), p);
#else
  Vec16 v{};
  if (count == kLanes)  // a constant-size copy compiles to vector loads, a variable one to a call
    std::memcpy(&v, p, sizeof(v));
  else
    std::memcpy(&v, p, sizeof(float) * size_t(count));
  return v;
#endif
}

[[gnu::always_inline]] inline Vec16 load(const uint16_t* p, int count) {
#ifdef MAMBACPP_SCAN_AVX512
  const __m256i bits = count == kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                       : _mm256_maskz_loadu_epi16(__mmask16((1u << count) - 1), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
#else
  uint16_t bits[kLanes] = {};
  if (count == kLanes)
    std::memcpy(bits, p, sizeof(bits));
  else
    std::memcpy(bits, p, sizeof(uint16_t) * size_t(count));
  Uint16x wide;
  for (int i = 0; i < kLanes; ++i) wide[i] = uint32_t(bits[i]) << 16;
  return Vec16(wide);
#endif
}

[[gnu::always_inline]] inline void store(float* p, Vec16 v, int count) {
#ifdef MAMBACPP_SCAN_AVX512
  if (count == kLanes)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, __mmask16((1u << count) - 1), v);
#else
  if (count == kLanes)
    std::memcpy(p, &v, sizeof(v));
  else
    std::memcpy(p, &v, sizeof(float) * size_t(count));
#endif
}

// Rounds to the nearest bfloat16, ties to even, keeping NaN a NaN (as core f32_to_bf16).
[[gnu::always_inline]] inline void store(uint16_t* p, Vec16 v, int count) {
#ifdef MAMBACPP_SCAN_AVX512
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)),
                                         _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1))),
                        16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512i result = _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  if (count == kLanes)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(result));
  else
    _mm256_mask_storeu_epi16(p, __mmask16((1u << count) - 1), _mm512_cvtepi32_epi16(result));
#else
  for (int i = 0; i < count; ++i) p[i] = f32_to_bf16(v[i]);
#endif
}

[[gnu::always_inline]] inline float reduce_add(Vec16 v) {
#ifdef MAMBACPP_SCAN_AVX512
  return _mm512_reduce_add_ps(v);
#else
  float sum = 0;
  for (int i = 0; i < kLanes; ++i) sum += v[i];
  return sum;
#endif
}

// Lane n of the result is the sum of the 16 lanes of v[n], by a pairwise tree (fixed order).
[[gnu::always_inline]] inline Vec16 transpose_sum(const Vec16 v[kLanes]) {
#ifdef MAMBACPP_SCAN_AVX512
  // Each level halves the number of vectors and doubles the sums packed in one: 16 → 8 vectors of
  // two 8-lane partials, → 4 of four 4-lane partials, → 2 of eight pairs, → 1 of sixteen sums.
  __m512 w[8], x[4], y[2];
  for (int i = 0; i < 8; ++i)
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),   // low halves
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));  // high halves
  for (int i = 0; i < 4; ++i)
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)
    y[i] =
        _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0x44), _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0xEE));
  __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums);
#else
  Vec16 sums;
  for (int n = 0; n < kLanes; ++n) sums[n] = reduce_add(v[n]);
  return sums;
#endif
}

namespace detail {
// Taylor coefficients of 2^f = e^(f·ln2): (ln2)^j / j!, j = 0..7.
struct Exp2Coefficients {
  float c[8];
  constexpr Exp2Coefficients() : c() {
    double term = 1.0;
    for (int j = 0; j < 8; ++j) {
      c[j] = float(term);
      term *= 0.69314718055994530942 / double(j + 1);
    }
  }
};
inline constexpr Exp2Coefficients kExp2;

// 2^f for f ∈ [−½, ½].
[[gnu::always_inline]] inline Vec16 exp2_fraction(Vec16 f) {
  Vec16 p = broadcast(kExp2.c[7]);
  for (int j = 6; j >= 0; --j) p = fma(p, f, broadcast(kExp2.c[j]));
  return p;
}

// p · 2^k for integral k ≥ −160. The fallback multiplies by 2^⌊k/2⌋ and 2^(k−⌊k/2⌋), each a
// normal float for −160 ≤ k ≤ 129, so subnormal results round once, as with scalef.
[[gnu::always_inline]] inline Vec16 scale_by_power_of_two(Vec16 p, Vec16 k) {
#ifdef MAMBACPP_SCAN_AVX512
  return _mm512_scalef_ps(p, k);
#else
  k = min(k, broadcast(129.0f));
  const Int16x whole = __builtin_convertvector(k, Int16x), half = whole >> 1;
  return p * Vec16((half + 127) << 23) * Vec16((whole - half + 127) << 23);
#endif
}

[[gnu::always_inline]] inline Vec16 round_to_integer(Vec16 x) {
#ifdef MAMBACPP_SCAN_AVX512
  return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const Vec16 shifter = broadcast(12582912.0f);  // 1.5·2^23: adding it rounds |x| < 2^22 to an integer
  return (x + shifter) - shifter;
#endif
}
}  // namespace detail

// 2^x, for the scan's exp(δ'·A) with log2(e) folded into A. The lower clamp keeps −inf from
// turning into NaN (2^−160 is 0 in float32).
[[gnu::always_inline]] inline Vec16 exp2(Vec16 x) {
  x = max(x, broadcast(-160.0f));
#ifndef MAMBACPP_SCAN_AVX512
  x = min(x, broadcast(200.0f));  // keeps the fallback's integer conversion in range
#endif
  const Vec16 k = detail::round_to_integer(x);
  return detail::scale_by_power_of_two(detail::exp2_fraction(x - k), k);
}

[[gnu::always_inline]] inline Vec16 exp(Vec16 x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2High = 0.693145751953125f;  // 16 significant bits, so k·kLn2High is exact
  constexpr float kLn2Low = 1.4286068203094173e-06f;
  x = max(x, broadcast(-110.0f));
#ifndef MAMBACPP_SCAN_AVX512
  x = min(x, broadcast(100.0f));
#endif
  const Vec16 k = detail::round_to_integer(x * kLog2e);
  Vec16 r = fma(k, broadcast(-kLn2High), x);
  r = fma(k, broadcast(-kLn2Low), r);
  return detail::scale_by_power_of_two(detail::exp2_fraction(r * kLog2e), k);
}

[[gnu::always_inline]] inline Vec16 sigmoid(Vec16 x) { return 1.0f / (1.0f + exp(-x)); }

[[gnu::always_inline]] inline Vec16 softplus(Vec16 x) {
  Vec16 y = exp(-abs(x));
  Vec16 s = y / (2.0f + y);
  Vec16 s2 = s * s;
  Vec16 series = broadcast(1.0f / 13);
  for (int j = 5; j >= 0; --j) series = fma(series, s2, broadcast(1.0f / float(2 * j + 1)));
  return max(x, Vec16{}) + 2.0f * s * series;
}

}  // namespace mamba::ops::cpu::simd

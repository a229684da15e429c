// Helpers shared by the CPU kernels: widening 16-bit floats to float32 (AVX-512 when compiled
// for it, plain loops otherwise), SiLU, blocked sums, and the CPU backend's input checks.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/tensor.h"

// The hand-written SIMD paths need AVX-512 F/BW/VL; other machines use the plain loops.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define MAMBA_CPU_AVX512 1
// GCC 12 warns inside its own intrinsics headers (_mm512_undefined_*) on every use; silence
// only that region.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace mamba::ops::cpu {

// dst[i] = float(src[i]) for src of dtype f32, bf16 or f16.
void widen_to_f32(const void* src, DType dtype, float* dst, int64_t n);

// CPU kernels take float32 activations; throws naming the tensor otherwise.
void check_f32_activation(const Tensor& t, const char* name);
// Weights and parameters may be f32, bf16 or f16; throws naming the tensor otherwise.
void check_float_weight(const Tensor& t, const char* name);

// A float32 copy of a small parameter (norm weight, conv weight, bias): `t` itself when it is
// already f32, undefined when `t` is.
Tensor parameter_as_f32(const Tensor& t);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }

// Σ_{i<n} term(i): float partial sums over blocks of 64 terms, added into a double, so a long
// row does not lose precision to one running float32 sum.
template <typename Term>
double blocked_sum(int64_t n, Term term) {
  double total = 0;
  for (int64_t block = 0; block < n; block += 64) {
    int64_t end = block + 64 < n ? block + 64 : n;
    float partial = 0;
    for (int64_t i = block; i < end; ++i) partial += term(i);
    total += partial;
  }
  return total;
}

// sums[c] += Σ_r a[r, c] for a [rows, cols] (bias gradients), threaded over columns, each column
// summed in row order in double: deterministic and independent of the thread count.
void add_column_sums(const float* a, int64_t rows, int64_t cols, float* sums);

}  // namespace mamba::ops::cpu

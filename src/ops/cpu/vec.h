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

// v[i] = e^(v[i] − shift), vectorised (within 2 ulp of std::exp; NaN stays NaN).
void exp_shifted_inplace(float* v, int64_t n, float shift);
// v[i] = SiLU(v[i]) = v[i]·σ(v[i]), vectorised; each element the same whatever range it is part of.
void silu_inplace(float* v, int64_t n);

// Asks for the cache lines of [p, p + bytes) ahead of use. For small working sets that a
// decode step's weight stream has evicted since the last step (states, A): read in the order the
// kernel goes, each line costs a full memory latency that the little work per line cannot hide.
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
}

// Σ_{i<n} term(i): 16 float lanes per block of 256 terms (so the compiler vectorises it),
// each block's sum added into a double, so a long row never sits in one running float32 sum.
template <typename Term>
double blocked_sum(int64_t n, Term term) {
  constexpr int64_t kLanes = 16, kBlock = 256;
  double total = 0;
  for (int64_t block = 0; block < n; block += kBlock) {
    const int64_t end = block + kBlock < n ? block + kBlock : n;
    float lanes[kLanes] = {};
    int64_t i = block;
    for (; i + kLanes <= end; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) lanes[j] += term(i + j);
    float partial = 0;
    for (; i < end; ++i) partial += term(i);
    for (float lane : lanes) partial += lane;
    total += partial;
  }
  return total;
}

// sums[c] += Σ_r a[r, c] for a [rows, cols] (bias gradients), threaded over columns, each column
// summed in row order in double: deterministic and independent of the thread count.
void add_column_sums(const float* a, int64_t rows, int64_t cols, float* sums);

}  // namespace mamba::ops::cpu

#include "ops/cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <vector>

#include "core/threads.h"
#include "ops/cpu/vec.h"

#if defined(MAMBACPP_BLAS_BLIS)
#include <blis.h>
#else
#include <cblas.h>
#endif

namespace mamba::ops::cpu {

namespace {

// Our pool does the threading: every BLAS call runs single-threaded on a slice of the output, so
// exactly num_threads() threads compute and no BLAS worker spins while our pool runs.
void make_blas_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] {
#if defined(MAMBACPP_BLAS_BLIS)
    bli_thread_set_num_threads(1);
#else
    openblas_set_num_threads(1);
#endif
  });
}

// ---- Streaming kernel for M ≤ 8: each weight row is loaded once and multiplied into every x row.

#ifdef MAMBA_CPU_AVX512
template <DType WT>
inline __m512 widen16(__m256i h) {
  if constexpr (WT == DType::bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

template <DType WT>
inline __m512 load_weights(const void* w, int64_t i) {
  if constexpr (WT == DType::f32) {
    return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  } else {
    return widen16<WT>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i)));
  }
}

template <DType WT>
inline __m512 load_weights_masked(const void* w, int64_t i, __mmask16 mask) {
  if constexpr (WT == DType::f32) {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(w) + i);
  } else {
    return widen16<WT>(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(w) + i));
  }
}

// y[m, n + r] = x[m]·W[n + r] for m < MR, r < NR.
template <DType WT, int MR, int NR>
void dot_rows(const float* x, int64_t K, const void* w, int64_t n, float* y, int64_t ldy) {
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = load_weights<WT>(w, (n + r) * K + k);
    for (int m = 0; m < MR; ++m) {
      __m512 xv = _mm512_loadu_ps(x + m * K + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  if (k < K) {
    __mmask16 mask = __mmask16((1u << (K - k)) - 1u);
    __m512 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = load_weights_masked<WT>(w, (n + r) * K + k, mask);
    for (int m = 0; m < MR; ++m) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * K + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[m * ldy + n + r] = _mm512_reduce_add_ps(acc[m][r]);
}
#else
template <DType WT>
inline float weight_at(const void* w, int64_t i) {
  if constexpr (WT == DType::f32) return static_cast<const float*>(w)[i];
  if constexpr (WT == DType::bf16) return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
  return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
}

template <DType WT, int MR, int NR>
void dot_rows(const float* x, int64_t K, const void* w, int64_t n, float* y, int64_t ldy) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < K; ++k) {
    float wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = weight_at<WT>(w, (n + r) * K + k);
    for (int m = 0; m < MR; ++m)
      for (int r = 0; r < NR; ++r) acc[m][r] += x[m * K + k] * wv[r];
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[m * ldy + n + r] = acc[m][r];
}
#endif

// x rows per kernel call: MR·NR accumulators must fit the 32 vector registers.
constexpr int64_t kRowGroup = 8;

// Weight rows read together by the kernel for MR rows of x: as many as the 32 vector registers
// allow (MR·NR accumulators + NR weights + one x), since each row is one more load stream in
// flight and a single core needs about 16 of them to approach its share of memory bandwidth
// (docs/perf/cpu_model.md, v2).
template <int MR>
constexpr int kWeightRowsFor = MR == 1   ? 16
                               : MR == 2 ? 8
                               : MR <= 4 ? 4
                                         : 2;

// Rows [n, n1) of W against MR rows of x, NR rows at a time; what is left over goes in halves.
template <DType WT, int MR, int NR>
void stream_rows_by(const float* x, int64_t K, const void* w, int64_t n, int64_t n1, float* y, int64_t ldy) {
  for (; n + NR <= n1; n += NR) dot_rows<WT, MR, NR>(x, K, w, n, y, ldy);
  if constexpr (NR > 1) stream_rows_by<WT, MR, NR / 2>(x, K, w, n, n1, y, ldy);
}

template <DType WT, int MR>
void stream_rows(const float* x, int64_t K, const void* w, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  stream_rows_by<WT, MR, kWeightRowsFor<MR>>(x, K, w, n0, n1, y, ldy);
}

using StreamFn = void (*)(const float*, int64_t, const void*, int64_t, int64_t, float*, int64_t);

// The kernel for `rows` (1..8) rows of x.
template <DType WT>
StreamFn stream_fn_for_rows(int64_t rows) {
  static constexpr StreamFn table[] = {stream_rows<WT, 1>, stream_rows<WT, 2>, stream_rows<WT, 3>, stream_rows<WT, 4>,
                                       stream_rows<WT, 5>, stream_rows<WT, 6>, stream_rows<WT, 7>, stream_rows<WT, 8>};
  static_assert(std::size(table) == kRowGroup);
  return table[rows - 1];
}

StreamFn stream_fn(DType wt, int64_t rows) {
  return wt == DType::f32    ? stream_fn_for_rows<DType::f32>(rows)
         : wt == DType::bf16 ? stream_fn_for_rows<DType::bf16>(rows)
                             : stream_fn_for_rows<DType::f16>(rows);
}

// Threads take chunks of about 256 KiB of weight rows as they become free (memory bandwidth is
// shared unevenly between cores, so equal static halves leave one thread waiting). Each chunk stays
// in L2 while every group of 8 x rows passes over it: W comes from memory once.
void gemm_streaming(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy) {
  const int64_t N = weight.size(0), K = weight.size(1);
  const DType wt = weight.dtype();
  const void* w = weight.raw();
  // Whole kernel widths per chunk, so no chunk ends in a ragged tail.
  constexpr int64_t kWidth = kWeightRowsFor<1>;
  const int64_t chunk = kWidth * std::max<int64_t>(1, (int64_t(1) << 18) / (kWidth * K * int64_t(dtype_size(wt))));
  parallel_for_chunks(N, chunk, [&](int64_t n0, int64_t n1, int) {
    for (int64_t m0 = 0; m0 < M; m0 += kRowGroup) {
      const int64_t rows = std::min(kRowGroup, M - m0);
      stream_fn(wt, rows)(x + m0 * K, K, w, n0, n1, y + m0 * ldy, ldy);
    }
  });
}

// ---- The BLAS paths: slices of output columns (or rows of dW) per range of our pool.

int blas_int(int64_t v, const char* what) {
  MAMBA_CHECK(v <= int64_t(INT32_MAX), what, ": dimension ", v, " exceeds what the BLAS library accepts");
  return int(v);
}

// Calls fn(begin, end) on slices of [0, n) that are multiples of 16 long (except the last), one
// slice per range, so each BLAS call gets a well-shaped block.
template <typename Fn>
void for_each_slice(int64_t n, Fn fn) {
  constexpr int64_t kAlign = 16;
  const int64_t blocks = (n + kAlign - 1) / kAlign;
  make_blas_single_threaded();
  parallel_for(blocks, [&](int64_t b0, int64_t b1, int) { fn(b0 * kAlign, std::min(n, b1 * kAlign)); });
}

// Weight rows per float32 panel of a 16-bit weight: about 1 MiB, so the panel stays in cache
// while the GEMM reads it (no float32 copy of the whole weight is ever made).
int64_t panel_rows(int64_t K) { return std::max<int64_t>(16, (int64_t(1) << 18) / std::max<int64_t>(K, 1)); }

// panel[r, c] = float(W[n0 + r, k0 + c]) for r < rows, c < cols.
void widen_block(const Tensor& weight, int64_t n0, int64_t rows, int64_t k0, int64_t cols, float* panel) {
  const int64_t K = weight.size(1);
  auto src = static_cast<const uint16_t*>(weight.raw());
  for (int64_t r = 0; r < rows; ++r) widen_to_f32(src + (n0 + r) * K + k0, weight.dtype(), panel + r * cols, cols);
}

}  // namespace

void gemm_x_wt(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy) {
  const int64_t N = weight.size(0), K = weight.size(1);
  if (M == 0 || N == 0) return;
  if (use_streaming_kernel(M, K, weight.dtype())) {
    gemm_streaming(x, M, weight, y, ldy);
    return;
  }
  const int m = blas_int(M, "gemm rows"), k = blas_int(K, "gemm inner dimension");
  const int ld = blas_int(ldy, "gemm output stride");
  blas_int(N, "gemm columns");
  for_each_slice(N, [&](int64_t n0, int64_t n1) {
    if (weight.dtype() == DType::f32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, int(n1 - n0), k, 1.0f, x, k,
                  weight.data<float>() + n0 * K, k, 0.0f, y + n0, ld);
      return;
    }
    const int64_t P = panel_rows(K);
    std::vector<float> panel(size_t(std::min(P, n1 - n0) * K));
    for (int64_t p0 = n0; p0 < n1; p0 += P) {
      const int64_t rows = std::min(P, n1 - p0);
      widen_block(weight, p0, rows, 0, K, panel.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, int(rows), k, 1.0f, x, k, panel.data(), k, 0.0f, y + p0,
                  ld);
    }
  });
}

void gemm_dy_w(const float* dy, int64_t M, int64_t ldy, const Tensor& weight, float* dx) {
  const int64_t N = weight.size(0), K = weight.size(1);
  if (M == 0 || K == 0) return;
  if (N == 0) {
    std::fill(dx, dx + M * K, 0.0f);
    return;
  }
  const int m = blas_int(M, "gemm rows"), n = blas_int(N, "gemm inner dimension");
  const int lda = blas_int(ldy, "gemm input stride"), ldc = blas_int(K, "gemm columns");
  // Each range owns the columns [k0, k1) of dx.
  for_each_slice(K, [&](int64_t k0, int64_t k1) {
    const int cols = int(k1 - k0);
    if (weight.dtype() == DType::f32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, cols, n, 1.0f, dy, lda, weight.data<float>() + k0, ldc,
                  0.0f, dx + k0, ldc);
      return;
    }
    const int64_t P = panel_rows(cols);
    std::vector<float> panel(size_t(std::min(P, N) * cols));
    for (int64_t p0 = 0; p0 < N; p0 += P) {
      const int64_t rows = std::min(P, N - p0);
      widen_block(weight, p0, rows, k0, cols, panel.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, cols, int(rows), 1.0f, dy + p0, lda, panel.data(), cols,
                  p0 == 0 ? 0.0f : 1.0f, dx + k0, ldc);
    }
  });
}

void gemm_accumulate_dyt_x(const float* dy, int64_t M, int64_t ldy, const float* x, int64_t N, int64_t K, float* dW) {
  if (M == 0 || N == 0 || K == 0) return;
  const int m = blas_int(M, "gemm inner dimension"), k = blas_int(K, "gemm columns");
  const int lda = blas_int(ldy, "gemm input stride");
  blas_int(N, "gemm rows");
  // Each range owns the rows [n0, n1) of dW.
  for_each_slice(N, [&](int64_t n0, int64_t n1) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(n1 - n0), k, m, 1.0f, dy + n0, lda, x, k, 1.0f,
                dW + n0 * K, k);
  });
}

}  // namespace mamba::ops::cpu

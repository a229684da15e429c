#include "ops/cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iterator>
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

// The BLAS library keeps its own threads; give it as many as --threads asked for.
void sync_blas_threads() {
  static std::atomic<int> current{0};
  int wanted = num_threads();
  if (current.exchange(wanted) == wanted) return;
#if defined(MAMBACPP_BLAS_BLIS)
  bli_thread_set_num_threads(wanted);
#else
  openblas_set_num_threads(wanted);
#endif
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

// Rows [n0, n1) of W against MR rows of x. NR weight rows at a time keep several independent
// load streams in flight; MR·NR accumulators stay within the register file.
template <DType WT, int MR>
void stream_rows(const float* x, int64_t K, const void* w, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  constexpr int NR = MR <= 2 ? 4 : 2;
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) dot_rows<WT, MR, NR>(x, K, w, n, y, ldy);
  for (; n < n1; ++n) dot_rows<WT, MR, 1>(x, K, w, n, y, ldy);
}

using StreamFn = void (*)(const float*, int64_t, const void*, int64_t, int64_t, float*, int64_t);

template <DType WT>
StreamFn stream_fn_for_rows(int64_t M) {
  static constexpr StreamFn table[] = {stream_rows<WT, 1>, stream_rows<WT, 2>, stream_rows<WT, 3>, stream_rows<WT, 4>,
                                       stream_rows<WT, 5>, stream_rows<WT, 6>, stream_rows<WT, 7>, stream_rows<WT, 8>};
  static_assert(std::size(table) == kStreamingMaxRows);
  return table[M - 1];
}

void gemm_streaming(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy) {
  int64_t N = weight.size(0), K = weight.size(1);
  StreamFn fn = weight.dtype() == DType::f32    ? stream_fn_for_rows<DType::f32>(M)
                : weight.dtype() == DType::bf16 ? stream_fn_for_rows<DType::bf16>(M)
                                                : stream_fn_for_rows<DType::f16>(M);
  const void* w = weight.raw();
  // At least 16 rows per range: smaller pieces cost more to hand out than they take to compute.
  int max_ranges = int(std::max<int64_t>(1, N / 16));
  parallel_for(N, max_ranges, [&](int64_t n0, int64_t n1, int) { fn(x, K, w, n0, n1, y, ldy); });
}

// ---- 16-bit weights for the BLAS paths: float32 panels of weight rows.

// Rows per float32 panel: about 2 MiB, so a panel stays in the last-level cache while the GEMM
// reads it, and the number of GEMM calls stays small.
int64_t panel_rows(int64_t K) { return std::max<int64_t>(64, (int64_t(1) << 19) / std::max<int64_t>(K, 1)); }

// panel[r, :] = float(W[n0 + r, :]) for r < rows.
void widen_panel(const Tensor& weight, int64_t n0, int64_t rows, float* panel) {
  int64_t K = weight.size(1);
  auto src = static_cast<const uint16_t*>(weight.raw()) + n0 * K;
  parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
    widen_to_f32(src + r0 * K, weight.dtype(), panel + r0 * K, (r1 - r0) * K);
  });
}

int blas_int(int64_t v, const char* what) {
  MAMBA_CHECK(v <= int64_t(INT32_MAX), what, ": dimension ", v, " exceeds what the BLAS library accepts");
  return int(v);
}

}  // namespace

void gemm_x_wt(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy) {
  int64_t N = weight.size(0), K = weight.size(1);
  if (M == 0 || N == 0) return;
  if (M <= kStreamingMaxRows) {
    gemm_streaming(x, M, weight, y, ldy);
    return;
  }
  sync_blas_threads();
  int m = blas_int(M, "gemm rows"), k = blas_int(K, "gemm inner dimension");
  if (weight.dtype() == DType::f32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, blas_int(N, "gemm columns"), k, 1.0f, x, k,
                weight.data<float>(), k, 0.0f, y, blas_int(ldy, "gemm output stride"));
    return;
  }
  int64_t P = panel_rows(K);
  std::vector<float> panel(size_t(std::min(P, N) * K));
  for (int64_t n0 = 0; n0 < N; n0 += P) {
    int64_t rows = std::min(P, N - n0);
    widen_panel(weight, n0, rows, panel.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, int(rows), k, 1.0f, x, k, panel.data(), k, 0.0f, y + n0,
                blas_int(ldy, "gemm output stride"));
  }
}

void gemm_dy_w(const float* dy, int64_t M, int64_t ldy, const Tensor& weight, float* dx) {
  int64_t N = weight.size(0), K = weight.size(1);
  if (M == 0 || K == 0) return;
  if (N == 0) {
    std::fill(dx, dx + M * K, 0.0f);
    return;
  }
  sync_blas_threads();
  int m = blas_int(M, "gemm rows"), k = blas_int(K, "gemm columns"), lda = blas_int(ldy, "gemm input stride");
  if (weight.dtype() == DType::f32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, blas_int(N, "gemm inner dimension"), 1.0f, dy, lda,
                weight.data<float>(), k, 0.0f, dx, k);
    return;
  }
  int64_t P = panel_rows(K);
  std::vector<float> panel(size_t(std::min(P, N) * K));
  for (int64_t n0 = 0; n0 < N; n0 += P) {
    int64_t rows = std::min(P, N - n0);
    widen_panel(weight, n0, rows, panel.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, int(rows), 1.0f, dy + n0, lda, panel.data(), k,
                n0 == 0 ? 0.0f : 1.0f, dx, k);
  }
}

void gemm_accumulate_dyt_x(const float* dy, int64_t M, int64_t ldy, const float* x, int64_t N, int64_t K, float* dW) {
  if (M == 0 || N == 0 || K == 0) return;
  sync_blas_threads();
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas_int(N, "gemm rows"), blas_int(K, "gemm columns"),
              blas_int(M, "gemm inner dimension"), 1.0f, dy, blas_int(ldy, "gemm input stride"), x, int(K), 1.0f, dW,
              int(K));
}

}  // namespace mamba::ops::cpu

#include "ops/cpu/gemm.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <utility>
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

// How far ahead of its reads a kernel streaming NR rows of 16-bit weights asks for them, in bytes.
// The hardware prefetchers follow a stream only within a 4 KiB page, so without this every page of
// a stream began with misses at memory latency (docs/perf/cpu_model.md v14 and v15: bf16 decode
// +8–15% at one row of x, +20–65% at 4–8 rows). A page ahead for up to 4 streams; at 8 streams
// 2 KiB each was the faster. Float32 weights are read 16 rows at a time, whose streams keep enough
// in flight already: prefetching them was slower (v15).
template <DType WT, int NR>
constexpr int64_t kPrefetchAheadBytes = WT == DType::f32 ? 0
                                        : NR >= 8        ? 2048
                                                         : 4096;

// y[m, n + r·step] = x[m]·W[n + r·step] for m < MR, r < NR (W's rows ldw elements apart).
template <DType WT, int MR, int NR>
void dot_rows(const float* x, int64_t K, const void* w, int64_t ldw, int64_t n, int64_t step, float* y, int64_t ldy) {
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  constexpr int64_t kAhead = kPrefetchAheadBytes<WT, NR>;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[NR];
    if (kAhead > 0 && k % 32 == 0)  // 32 weights of 2 bytes: one cache line a row
      for (int r = 0; r < NR; ++r)
        _mm_prefetch(static_cast<const uint16_t*>(w) + (n + r * step) * ldw + k + kAhead / 2, _MM_HINT_T0);
    for (int r = 0; r < NR; ++r) wv[r] = load_weights<WT>(w, (n + r * step) * ldw + k);
    for (int m = 0; m < MR; ++m) {
      __m512 xv = _mm512_loadu_ps(x + m * K + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  if (k < K) {
    __mmask16 mask = __mmask16((1u << (K - k)) - 1u);
    __m512 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = load_weights_masked<WT>(w, (n + r * step) * ldw + k, mask);
    for (int m = 0; m < MR; ++m) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * K + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[m * ldy + n + r * step] = _mm512_reduce_add_ps(acc[m][r]);
}
#else
template <DType WT>
inline float weight_at(const void* w, int64_t i) {
  if constexpr (WT == DType::f32) return static_cast<const float*>(w)[i];
  if constexpr (WT == DType::bf16) return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
  return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
}

template <DType WT, int MR, int NR>
void dot_rows(const float* x, int64_t K, const void* w, int64_t ldw, int64_t n, int64_t step, float* y, int64_t ldy) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < K; ++k) {
    float wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = weight_at<WT>(w, (n + r * step) * ldw + k);
    for (int m = 0; m < MR; ++m)
      for (int r = 0; r < NR; ++r) acc[m][r] += x[m * K + k] * wv[r];
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[m * ldy + n + r * step] = acc[m][r];
}
#endif

#ifdef MAMBA_CPU_AVX512
// y[n] = x·W[n] for one x row (decode at batch 1, 16-bit weights): the weight row read front to
// back, so that each thread's reads are one stream through memory (the rows of a chunk follow one
// another), with four sums in flight (one FMA chain would cap a core near one vector of weights
// per 4 cycles). Prefetches past the row's end land in the next rows of the stream.
template <DType WT>
void dot_row(const float* x, int64_t K, const void* w_row, float* y) {
  static_assert(WT != DType::f32, "the one-row kernel steps 2 bytes a weight");
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const char* ahead = static_cast<const char*>(w_row) + kPrefetchAheadBytes<WT, 1>;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {  // 128 bytes of weights: two cache lines
    _mm_prefetch(ahead + 2 * k, _MM_HINT_T0);
    _mm_prefetch(ahead + 2 * k + 64, _MM_HINT_T0);
    for (int a = 0; a < 4; ++a)
      acc[a] = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16 * a), load_weights<WT>(w_row, k + 16 * a), acc[a]);
  }
  for (; k + 16 <= K; k += 16) acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), load_weights<WT>(w_row, k), acc[0]);
  if (k < K) {
    const __mmask16 mask = __mmask16((1u << (K - k)) - 1u);
    acc[0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + k), load_weights_masked<WT>(w_row, k, mask), acc[0]);
  }
  *y = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}
#endif

// x rows per kernel call: MR·NR accumulators must fit the 32 vector registers.
constexpr int64_t kRowGroup = 8;

// Weight rows read together by the kernel for MR rows of x: as many as the 32 vector registers
// allow (MR·NR accumulators + NR weights + one x), since each row is one more load stream in
// flight and a single core needs about 16 of them to approach its share of memory bandwidth
// (docs/perf/cpu_model.md, v2). With AVX-512 a single x row of 16-bit weights reads one weight row
// at a time instead (stream_rows); chunks still hold whole groups of 16 rows.
template <int MR>
constexpr int kWeightRowsFor = MR == 1   ? 16
                               : MR == 2 ? 8
                               : MR <= 4 ? 4
                                         : 2;

// Rows [n, n1) of W against MR rows of x, NR rows at a time; what is left over goes in halves.
// The NR rows read together lie (n1 − n)/NR rows apart, so each load stream walks consecutive
// rows: rows shorter than a 4 KiB page would otherwise put several streams in one page, and the
// hardware prefetcher, which follows the accesses within a page, then picks up none of them well
// (bf16 rows at K = 768 are 1.5 KiB: ~45 GB/s against ~55 in this order; docs/perf/cpu_model.md v9).
template <DType WT, int MR, int NR>
void stream_rows_by(const float* x, int64_t K, const void* w, int64_t ldw, int64_t n, int64_t n1, float* y,
                    int64_t ldy) {
  const int64_t groups = (n1 - n) / NR;
  for (int64_t g = 0; g < groups; ++g) dot_rows<WT, MR, NR>(x, K, w, ldw, n + g, groups, y, ldy);
  n += groups * NR;
  if constexpr (NR > 1) stream_rows_by<WT, MR, NR / 2>(x, K, w, ldw, n, n1, y, ldy);
}

template <DType WT, int MR>
void stream_rows(const float* x, int64_t K, const void* w, int64_t ldw, int64_t n0, int64_t n1, float* y, int64_t ldy) {
#ifdef MAMBA_CPU_AVX512
  // One x row of 16-bit weights: rows one after the other (bf16 130m decode +2–3% over 16 spread
  // rows at the same read rate, up to 15% in a stand-alone product while the machine's memory is
  // busy; docs/perf/cpu_model.md, v13). f32 rows (3–4 KiB) keep the spread groups (370m f32 −3%
  // one row at a time), and so do more x rows, whose loads the groups serve all at once.
  if constexpr (MR == 1 && WT != DType::f32) {
    const int64_t row_bytes = ldw * int64_t(dtype_size(WT));
    for (int64_t n = n0; n < n1; ++n) dot_row<WT>(x, K, static_cast<const char*>(w) + n * row_bytes, y + n);
    return;
  }
#endif
  stream_rows_by<WT, MR, kWeightRowsFor<MR>>(x, K, w, ldw, n0, n1, y, ldy);
}

using StreamFn = void (*)(const float*, int64_t, const void*, int64_t, int64_t, int64_t, float*, int64_t);

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

}  // namespace

int64_t stream_chunk_rows(const Tensor& weight, int64_t M) {
  const int64_t N = weight.size(0), K = weight.size(1);
  // Whole kernel widths per chunk, so no chunk ends in a ragged tail, and at least four chunks per
  // thread when the rows allow (x_proj and dt_proj are a few hundred KiB in all). At most 1 MiB
  // where one pass of the x rows reads the chunk (each chunk starts a new stream, whose first
  // reads wait on memory: 256 KiB chunks cost bf16 decode ≈ 8%, docs/perf/cpu_model.md v14); at
  // most 256 KiB where several groups of x rows pass over it, so that it stays in L2 between them.
  constexpr int64_t kWidth = kWeightRowsFor<1>;
  const int64_t chunk_bytes = M <= kRowGroup ? int64_t(1) << 20 : int64_t(1) << 18;
  const int64_t widths_in_chunk =
      std::max<int64_t>(1, chunk_bytes / (kWidth * K * int64_t(dtype_size(weight.dtype()))));
  const int64_t widths_for_4_per_thread = std::max<int64_t>(1, N / (kWidth * 4 * num_threads()));
  return kWidth * std::min(widths_in_chunk, widths_for_4_per_thread);
}

void stream_x_wt_rows(const float* x, int64_t M, const Tensor& weight, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t K = weight.size(1), ldw = weight.row_stride();
  for (int64_t m0 = 0; m0 < M; m0 += kRowGroup) {
    const int64_t rows = std::min(kRowGroup, M - m0);
    stream_fn(weight.dtype(), rows)(x + m0 * K, K, weight.raw_rows(), ldw, n0, n1, y + m0 * ldy, ldy);
  }
}

namespace {

// Threads take chunks of weight rows as they become free (memory bandwidth is shared unevenly
// between cores, so equal static halves leave one thread waiting). Each chunk stays in L2 while
// every group of 8 x rows passes over it: W comes from memory once.
void gemm_streaming(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy) {
  parallel_for_chunks(weight.size(0), stream_chunk_rows(weight, M),
                      [&](int64_t n0, int64_t n1, int) { stream_x_wt_rows(x, M, weight, n0, n1, y, ldy); });
}

// ---- Register-tiled products for many rows (prefill, training), AVX-512.
//
// out[i, j] (+)= Σ_k A(i, k)·B(k, j). B is packed 32 columns at a time into a panel [k][32] of
// float32 (16-bit weights are widened while packing); the kernel keeps a tile of up to 12 rows ×
// 32 columns in 24 vector registers, and each k step loads the panel's two vectors and broadcasts
// one A value per row: 24 FMAs per 14 loads, so it runs near the FMA rate (docs/perf/cpu_model.md).
#ifdef MAMBA_CPU_AVX512
constexpr int64_t kPanelWidth = 32;    // B columns per panel: two vectors
constexpr int kMaxTileRows = 12;       // 24 accumulators + 2 panel vectors + 1 broadcast ≤ 32 registers
constexpr int64_t kDepthBlock = 256;   // k per packed block: a work item's four panels (32 KiB each) stay in L2
constexpr int64_t kPanelsPerItem = 4;  // columns per work item: 128
constexpr int64_t kRowsPerItem = 16 * kMaxTileRows;  // rows per work item, when the columns alone give too few items

// A(i, k) = data[i·row_stride + k·depth_stride]: x as stored, or dyᵀ read in place.
struct StridedMatrix {
  const float* data;
  int64_t row_stride, depth_stride;
  const float* at(int64_t i, int64_t k) const { return data + i * row_stride + k * depth_stride; }
};

// The tile out[0:MR, 0:32) (+)= A[0:MR, 0:depth)·panel; `width` ≤ 32 columns are written.
template <int MR>
void multiply_tile(StridedMatrix a, const float* panel, int64_t depth, float* out, int64_t ldo, bool accumulate,
                   int64_t width) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < depth; ++k) {
    const __m512 b0 = _mm512_load_ps(panel + k * kPanelWidth), b1 = _mm512_load_ps(panel + k * kPanelWidth + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(*a.at(i, k));
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  const __mmask16 mask0 = width >= 16 ? __mmask16(0xffff) : __mmask16((1u << width) - 1u);
  const __mmask16 mask1 = width >= 32 ? __mmask16(0xffff) : width <= 16 ? 0 : __mmask16((1u << (width - 16)) - 1u);
  for (int i = 0; i < MR; ++i) {
    float* row = out + i * ldo;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(mask0, row));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(mask1, row + 16));
    }
    _mm512_mask_storeu_ps(row, mask0, acc[i][0]);
    _mm512_mask_storeu_ps(row + 16, mask1, acc[i][1]);
  }
}

using TileFn = void (*)(StridedMatrix, const float*, int64_t, float*, int64_t, bool, int64_t);

// 16 floats on one cache line: the packed panels are read with aligned vector loads.
struct alignas(64) CacheLine {
  float lanes[16];
};

template <size_t... R>
constexpr auto make_tile_table(std::index_sequence<R...>) {
  return std::array{static_cast<TileFn>(multiply_tile<int(R) + 1>)...};
}

TileFn tile_fn(int64_t rows) {
  static constexpr auto table = make_tile_table(std::make_index_sequence<kMaxTileRows>{});
  return table[size_t(rows - 1)];
}

// pack(j0, width, k0, depth, panel) writes panel[k][c] = B(k0 + k, j0 + c) for c < width (float32)
// and zeros for width ≤ c < 32.
template <typename Pack>
void packed_product(StridedMatrix a, int64_t rows, int64_t cols, int64_t depth, const Pack& pack, float* out,
                    int64_t ldo, bool accumulate) {
  const int64_t col_items = (cols + kPanelWidth * kPanelsPerItem - 1) / (kPanelWidth * kPanelsPerItem);
  // Split rows too when the columns alone would leave a thread idle (x_proj has 80 columns).
  const int64_t row_items = col_items >= 4 * num_threads() ? 1 : (rows + kRowsPerItem - 1) / kRowsPerItem;
  const int64_t rows_per_item = (rows + row_items - 1) / row_items;
  parallel_for_chunks(row_items * col_items, 1, [&](int64_t item, int64_t, int) {
    const int64_t i0 = (item / col_items) * rows_per_item, i1 = std::min(rows, i0 + rows_per_item);
    const int64_t j0 = (item % col_items) * kPanelWidth * kPanelsPerItem;
    const int64_t j1 = std::min(cols, j0 + kPanelWidth * kPanelsPerItem);
    const int64_t panels = (j1 - j0 + kPanelWidth - 1) / kPanelWidth;
    thread_local std::vector<CacheLine> packed;
    packed.resize(size_t(panels * kDepthBlock * 2));
    for (int64_t k0 = 0; k0 < depth; k0 += kDepthBlock) {
      const int64_t kc = std::min(kDepthBlock, depth - k0);
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t c0 = j0 + p * kPanelWidth;
        pack(c0, std::min(kPanelWidth, j1 - c0), k0, kc, packed[size_t(p * kc * 2)].lanes);
      }
      const bool add = accumulate || k0 > 0;
      for (int64_t i = i0; i < i1; i += kMaxTileRows) {
        const int64_t tile_rows = std::min<int64_t>(kMaxTileRows, i1 - i);
        const StridedMatrix tile{a.at(i, k0), a.row_stride, a.depth_stride};
        for (int64_t p = 0; p < panels; ++p) {
          const int64_t c0 = j0 + p * kPanelWidth;
          tile_fn(tile_rows)(tile, packed[size_t(p * kc * 2)].lanes, kc, out + i * ldo + c0, ldo, add,
                             std::min(kPanelWidth, j1 - c0));
        }
      }
    }
  });
}

// r[i][j] ← r[j][i] for a 16 × 16 block of floats, in registers: pairs of rows interleaved,
// then pairs of pairs, then 128-bit blocks gathered across the four groups of four rows.
inline void transpose16(__m512 r[16]) {
  __m512 t[16], q[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // q[4g + j], block b = rows 4g..4g+3 at column 4b + j.
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    q[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    q[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    q[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    q[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 low01 = _mm512_shuffle_f32x4(q[j], q[4 + j], 0x44),
                 low23 = _mm512_shuffle_f32x4(q[8 + j], q[12 + j], 0x44);
    const __m512 high01 = _mm512_shuffle_f32x4(q[j], q[4 + j], 0xEE),
                 high23 = _mm512_shuffle_f32x4(q[8 + j], q[12 + j], 0xEE);
    r[j] = _mm512_shuffle_f32x4(low01, low23, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(low01, low23, 0xDD);
    r[8 + j] = _mm512_shuffle_f32x4(high01, high23, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(high01, high23, 0xDD);
  }
}

// Panel of Wᵀ: panel[k][c] = W[j0 + c, k0 + k] (y = x·Wᵀ, W [N, K]), 16 × 16 blocks transposed in
// registers (a scalar scatter would cost as much as the product itself for M ≤ 64).
template <DType WT>
void pack_transposed_rows_as(const Tensor& w, int64_t j0, int64_t width, int64_t k0, int64_t depth, float* panel) {
  const int64_t ldw = w.row_stride();
  for (int64_t half = 0; half < kPanelWidth; half += 16) {
    const int64_t rows = std::clamp<int64_t>(width - half, 0, 16);
    for (int64_t kb = 0; kb < depth; kb += 16) {
      const int64_t cols = std::min<int64_t>(16, depth - kb);
      const __mmask16 mask = cols == 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1u);
      __m512 block[16];
      for (int64_t r = 0; r < 16; ++r)
        block[r] = r < rows ? load_weights_masked<WT>(w.raw_rows(), (j0 + half + r) * ldw + k0 + kb, mask)
                            : _mm512_setzero_ps();
      transpose16(block);
      for (int64_t k = 0; k < cols; ++k) _mm512_store_ps(panel + (kb + k) * kPanelWidth + half, block[k]);
    }
  }
}

void pack_transposed_rows(const Tensor& w, int64_t j0, int64_t width, int64_t k0, int64_t depth, float* panel) {
  switch (w.dtype()) {
    case DType::f32:
      return pack_transposed_rows_as<DType::f32>(w, j0, width, k0, depth, panel);
    case DType::bf16:
      return pack_transposed_rows_as<DType::bf16>(w, j0, width, k0, depth, panel);
    default:
      return pack_transposed_rows_as<DType::f16>(w, j0, width, k0, depth, panel);
  }
}

// Panel of a row-major matrix read as is: panel[k][c] = M[k0 + k, j0 + c] (M of dtype `dtype`,
// row stride `ld` elements).
void pack_rows(const void* m, DType dtype, int64_t ld, int64_t j0, int64_t width, int64_t k0, int64_t depth,
               float* panel) {
  for (int64_t k = 0; k < depth; ++k) {
    float* dst = panel + k * kPanelWidth;
    widen_to_f32(static_cast<const char*>(m) + ((k0 + k) * ld + j0) * int64_t(dtype_size(dtype)), dtype, dst, width);
    std::fill(dst + width, dst + kPanelWidth, 0.0f);
  }
}
#endif

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
  const int64_t ldw = weight.row_stride();
  auto src = static_cast<const uint16_t*>(weight.raw_rows());
  for (int64_t r = 0; r < rows; ++r) widen_to_f32(src + (n0 + r) * ldw + k0, weight.dtype(), panel + r * cols, cols);
}

}  // namespace

void gemm_x_wt(const float* x, int64_t M, const Tensor& weight, float* y, int64_t ldy) {
  const int64_t N = weight.size(0), K = weight.size(1);
  if (M == 0 || N == 0) return;
  if (use_streaming_kernel(M, K, weight.dtype())) {
    gemm_streaming(x, M, weight, y, ldy);
    return;
  }
#ifdef MAMBA_CPU_AVX512
  auto pack = [&](int64_t j0, int64_t width, int64_t k0, int64_t depth, float* panel) {
    pack_transposed_rows(weight, j0, width, k0, depth, panel);
  };
  packed_product({x, K, 1}, M, N, K, pack, y, ldy, false);
  return;
#endif
  const int m = blas_int(M, "gemm rows"), k = blas_int(K, "gemm inner dimension");
  const int ld = blas_int(ldy, "gemm output stride");
  blas_int(N, "gemm columns");
  for_each_slice(N, [&](int64_t n0, int64_t n1) {
    if (weight.dtype() == DType::f32) {
      const int64_t ldw = weight.row_stride();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, int(n1 - n0), k, 1.0f, x, k,
                  static_cast<const float*>(weight.raw_rows()) + n0 * ldw, blas_int(ldw, "gemm weight row stride"),
                  0.0f, y + n0, ld);
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
#ifdef MAMBA_CPU_AVX512
  auto pack = [&](int64_t j0, int64_t width, int64_t k0, int64_t depth, float* panel) {
    pack_rows(weight.raw_rows(), weight.dtype(), weight.row_stride(), j0, width, k0, depth, panel);
  };
  packed_product({dy, ldy, 1}, M, K, N, pack, dx, K, false);
  return;
#endif
  const int m = blas_int(M, "gemm rows"), n = blas_int(N, "gemm inner dimension");
  const int lda = blas_int(ldy, "gemm input stride"), ldc = blas_int(K, "gemm columns");
  // Each range owns the columns [k0, k1) of dx.
  for_each_slice(K, [&](int64_t k0, int64_t k1) {
    const int cols = int(k1 - k0);
    if (weight.dtype() == DType::f32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, cols, n, 1.0f, dy, lda,
                  static_cast<const float*>(weight.raw_rows()) + k0,
                  blas_int(weight.row_stride(), "gemm weight row stride"), 0.0f, dx + k0, ldc);
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
#ifdef MAMBA_CPU_AVX512
  auto pack = [&](int64_t j0, int64_t width, int64_t k0, int64_t depth, float* panel) {
    pack_rows(x, DType::f32, K, j0, width, k0, depth, panel);
  };
  packed_product({dy, 1, ldy}, N, K, M, pack, dW, K, true);
  return;
#endif
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

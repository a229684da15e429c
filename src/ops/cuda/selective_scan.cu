// CUDA selective scan: forward, backward (with recomputation) and the decode step.
//
// Two designs. The default forward for N = 16 is scan_group_kernel (forward variant 4, described
// there): four threads per (sequence, channel), each walking the positions with 4 of the 16 states
// in registers. The lane scans below are the backward, the forward for other N, and forward
// variants 0–3.
//
// Lane scans, work split. One block of kWarps warps handles kWarps consecutive channels of one sequence; warp w
// owns channel c0 + w. The sequence is walked in chunks of kChunk = 32·kItems positions: each lane
// owns kItems consecutive positions of the chunk. Per state n the recurrence h = a·h + b over the
// chunk is an associative scan of (a, b) pairs: each lane composes its own items, a 5-step shuffle
// scan combines the lanes, and the state carried from the previous chunk seeds it. So every
// exp(δ·A) is evaluated once, and h never leaves registers.
//
// Token-major inputs ([batch, L, D]) are read a chunk at a time, coalesced, into shared memory
// transposed to [channel][position], so each lane reads its kItems positions as one vector. B and
// C ([batch, L, N]) are shared by the block's channels: they are converted to float32 once per chunk
// into [n][position] tiles.
//
// Few sequences × channels leave SMs idle; the length is then split across blocks: a summary pass
// gives each split's end state (from zero) and Σδ' (a weighted sum, no scan), a tiny pass chains
// the splits, and the output pass reruns every split from its true incoming state.
//
// Backward: the state at the start of each chunk (the only state that touches device memory)
// comes from a training forward, which writes it as its output pass goes (ScanInputs::
// keep_chunk_states), or else from the summary and chain passes with every chunk a split; then
// the backward kernel walks the
// chunks in reverse, recomputes the chunk's states from that start state, and runs the reverse
// scan of g_t = a_{t+1}·g_{t+1} + C_t·dy_t in the same (a, b)-pair form. dB and dC are summed over the
// block's channels in shared memory state by state (into the B and C tiles' rows, which that state
// no longer needs), then added to device memory with 16-byte atomics once per chunk.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/scan_launch.h"
#include "ops/selective_scan.h"

namespace mamba::ops {
namespace {
using namespace cuda_detail;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kForwardItems = 8;
constexpr int kBackwardItems = 8;
// The lane-scan backward's chunk: the state stride (scan_state_stride) of the inputs it takes.
constexpr int kLaneStateChunk = 32 * kBackwardItems;
static_assert(kLaneStateChunk == 256, "ops/selective_scan.h: scan_state_stride");
constexpr float kLn2 = 0.6931471805599453f;

struct ScanArgs {
  const void *u = nullptr, *delta = nullptr, *B = nullptr, *C = nullptr, *z = nullptr, *dout = nullptr;
  const float *A = nullptr, *D = nullptr, *delta_bias = nullptr, *initial_state = nullptr;
  const int32_t* lengths = nullptr;
  const float* dlast_state = nullptr;
  const void* delta_proj = nullptr;  // step: [D, delta_rank] f32 | bf16; delta is then [batch, delta_rank]
  int batch = 0, L = 0, dim = 0, nstate = 0, delta_rank = 0;
  // Step with delta_proj: elements from one sequence's low-rank δ row to the next, and the same for
  // B and C (delta_rank and nstate, or R + 2N where the three lie side by side in x_proj's output).
  int64_t delta_row_stride = 0, state_row_stride = 0;
  bool softplus = false;
  bool vector_channels = false;     // [.., D] rows move as 16-byte vectors (D multiple of the vector)
  bool vector_states = false;       // the same for [.., N] rows of B and C
  bool vector_state_grads = false;  // float32 dB, dC rows take 16-byte atomics (N multiple of 4)
  bool vector_delta_proj = false;   // delta_proj rows move as 16-byte vectors
  int splits = 1, split_len = 0;
  int state_stride = kLaneStateChunk;  // positions between chunk states (scan_state_stride)
  void* out = nullptr;
  float* last_state = nullptr;
  float* split_delta_sum = nullptr;  // summary: [batch, splits, D]  Σ δ' over the split
  float* split_state = nullptr;      // summary: [batch, splits, D, N] end state from zero
  float* split_init = nullptr;       // output/states: [batch, splits, D, N] incoming state
  float* chunk_states = nullptr;     // [batch, chunks, D, N] state before each backward chunk
  void *du = nullptr, *ddelta = nullptr, *dz = nullptr;
  float *dB = nullptr, *dC = nullptr, *dA = nullptr, *dD = nullptr, *ddelta_bias = nullptr;
  float* dinitial_state = nullptr;
};

// Positions of sequence b that are real (the rest of a right-padded batch is skipped).
__device__ __forceinline__ int valid_length(const ScanArgs& p, int b) {
  return p.lengths ? max(0, min(p.lengths[b], p.L)) : p.L;
}

// Positions [begin, end) of one split of the length, and where its valid positions end.
struct SplitBounds {
  int begin, end, valid_end;
};
__device__ __forceinline__ SplitBounds split_bounds(const ScanArgs& p, int b, int split) {
  const int begin = split * p.split_len, end = min(p.L, begin + p.split_len);
  return {begin, end, min(valid_length(p, b), end)};
}

// A·log2(e) of state n of channel ch (zero past the last channel), so decays are one exp2.
__device__ __forceinline__ float scaled_A(const ScanArgs& p, int ch, int n, int N) {
  return ch < p.dim ? p.A[ch * N + n] * kLog2e : 0.0f;
}

// Shared-memory row strides: float rows padded by 4 and storage rows by 8 elements keep 16-byte
// vector alignment and spread consecutive rows over different banks.
template <int kItems>
struct Tile {
  static_assert(kItems % 4 == 0, "lanes read their items as 16-byte groups of 4 floats");
  static constexpr int len = 32 * kItems;
  static constexpr int float_row = len + 4;
  static constexpr int raw_row = len + 8;
  // Float rows that every lane reads once per state (B, C, and the backward's dB/dC partials)
  // hold each lane's kItems positions as kItems/4 groups of 4, the groups interleaved across
  // lanes: position lane·kItems + 4g + j sits at slot 128g + 4·lane + j. A warp's 16-byte reads
  // then cover 512 consecutive bytes; in position order lanes 4 apart would share banks (every
  // read a 2-way conflict).
  static __device__ __forceinline__ int slot(int tt) {
    const int lane = tt / kItems, i = tt % kItems;
    return (i / 4) * 128 + lane * 4 + i % 4;
  }
  // The position held at slot s (the inverse of slot): code that fills or drains a row walks
  // slots, so a warp's 32 accesses hit 32 consecutive floats (no bank conflicts).
  static __device__ __forceinline__ int position(int s) { return (s % 128) / 4 * kItems + s / 128 * 4 + s % 4; }
};

// A lane's kItems floats of an interleaved row (Tile::slot).
template <int kItems>
__device__ __forceinline__ void load_lane_items(const float* row, int lane, float (&dst)[kItems]) {
#pragma unroll
  for (int g = 0; g < kItems / 4; ++g) {
    const float4 v = reinterpret_cast<const float4*>(row)[g * 32 + lane];
    dst[4 * g] = v.x, dst[4 * g + 1] = v.y, dst[4 * g + 2] = v.z, dst[4 * g + 3] = v.w;
  }
}

template <int kItems>
__device__ __forceinline__ void store_lane_items(float* row, int lane, const float (&src)[kItems]) {
#pragma unroll
  for (int g = 0; g < kItems / 4; ++g)
    reinterpret_cast<float4*>(row)[g * 32 + lane] =
        make_float4(src[4 * g], src[4 * g + 1], src[4 * g + 2], src[4 * g + 3]);
}

template <int kBytes>
struct Vector;
template <>
struct Vector<16> {
  using type = uint4;
};
template <>
struct Vector<8> {
  using type = uint2;
};

// A lane's kItems consecutive elements, moved as 16-byte (or 8-byte) vectors.
template <typename T, int K>
__device__ __forceinline__ void load_items(const T* src, float (&dst)[K]) {
  constexpr int kBytes = int(sizeof(T)) * K, kVec = kBytes >= 16 ? 16 : kBytes;
  using V = typename Vector<kVec>::type;
  alignas(16) T vals[K];
#pragma unroll
  for (int v = 0; v < kBytes / kVec; ++v) reinterpret_cast<V*>(vals)[v] = reinterpret_cast<const V*>(src)[v];
#pragma unroll
  for (int i = 0; i < K; ++i) dst[i] = to_float(vals[i]);
}

template <typename T, int K>
__device__ __forceinline__ void store_items(T* dst, const float (&src)[K]) {
  constexpr int kBytes = int(sizeof(T)) * K, kVec = kBytes >= 16 ? 16 : kBytes;
  using V = typename Vector<kVec>::type;
  alignas(16) T vals[K];
#pragma unroll
  for (int i = 0; i < K; ++i) vals[i] = from_float<T>(src[i]);
#pragma unroll
  for (int v = 0; v < kBytes / kVec; ++v) reinterpret_cast<V*>(dst)[v] = reinterpret_cast<const V*>(vals)[v];
}

// One thread's share of a chunk of token-major rows (kRowElems elements of a row: the block's
// channels, or with kStateRows the N states), moved as 16-byte vectors and held in registers
// between `fetch` (device memory) and `put_*` (shared-memory tiles). The forward kernel fetches
// the next chunk while the current one's output is written, so the reads' latency is hidden (in
// the backward the same cost 2–4%: v10 in docs/perf/cuda_scan.md).
template <typename T, int kItems, int kRowElems, bool kStateRows = false>
struct RowVectors {
  using Tl = Tile<kItems>;
  static constexpr int kVec = 16 / sizeof(T), kPerRow = kRowElems / kVec, kCount = Tl::len * kPerRow / kThreads;
  static_assert(kRowElems % kVec == 0 && Tl::len * kPerRow % kThreads == 0, "whole vectors, equal shares");
  uint4 v[kCount];

  // Vector k (e = thread + k·kThreads): elements from j0 of position tt. Channel rows go position
  // by position; state rows slot by slot (Tile::slot), so that put_states stores 32 consecutive
  // floats of a row per warp (position order put 16 positions × 2 row halves of a warp on 8
  // banks: 4-way conflicts; cuda_scan.md v18).
  static __device__ __forceinline__ void locate(int k, int& tt, int& j0, int& slot) {
    const int e = threadIdx.x + k * kThreads;
    if constexpr (kStateRows) {
      const int part = e / Tl::len;
      slot = e - part * Tl::len, tt = Tl::position(slot), j0 = part * kVec;
    } else {
      tt = e / kPerRow, j0 = e % kPerRow * kVec, slot = -1;
    }
  }
  // Rows t0 + tt ≥ L and elements col0 + … ≥ cols read as zeros.
  __device__ __forceinline__ void fetch(const T* src, int64_t stride, int t0, int L, int col0, int cols) {
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      int tt, j0, slot;
      locate(k, tt, j0, slot);
      const int t = t0 + tt, col = col0 + j0;
      v[k] = t < L && col < cols ? *reinterpret_cast<const uint4*>(src + t * stride + col) : make_uint4(0, 0, 0, 0);
    }
  }
  // tile[element][tt]: a [channel][position] storage tile.
  __device__ __forceinline__ void put_channels(T* tile) const {
    static_assert(!kStateRows, "state rows go to float tiles");
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      int tt, j0, slot;
      locate(k, tt, j0, slot);
      const T* vals = reinterpret_cast<const T*>(&v[k]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) tile[(j0 + j) * Tl::raw_row + tt] = vals[j];
    }
  }
  // tile[element][slot(tt)] in float32: a [state][position] tile, interleaved (Tile::slot).
  __device__ __forceinline__ void put_states(float* tile) const {
    static_assert(kStateRows, "channel rows go to storage tiles");
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      int tt, j0, slot;
      locate(k, tt, j0, slot);
      const T* vals = reinterpret_cast<const T*>(&v[k]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) tile[(j0 + j) * Tl::float_row + slot] = to_float(vals[j]);
    }
  }
};

// tile[cc][tt] = src[t0 + tt][c0 + cc] for the block's channels; zeros outside [0, L) × [0, dim).
// With `vector_rows` (dim a multiple of the 16-byte vector, 16-byte aligned rows) each thread
// moves whole 16-byte vectors of consecutive channels.
template <typename T, int kItems>
__device__ void load_channel_tile(T* tile, const T* src, int t0, int L, int c0, int dim, bool vector_rows) {
  using Tl = Tile<kItems>;
  if (vector_rows) {
    RowVectors<T, kItems, kWarps> rows;
    rows.fetch(src, dim, t0, L, c0, dim);
    rows.put_channels(tile);
    return;
  }
  for (int e = threadIdx.x; e < Tl::len * kWarps; e += kThreads) {
    const int tt = e / kWarps, cc = e % kWarps, t = t0 + tt, c = c0 + cc;
    tile[cc * Tl::raw_row + tt] = t < L && c < dim ? src[int64_t(t) * dim + c] : from_float<T>(0.0f);
  }
}

// The inverse for outputs: dst[t0 + tt][c0 + cc] = tile[cc][tt] for positions in [t0, t_end).
template <typename T, int kItems>
__device__ void store_channel_tile(T* dst, const T* tile, int t0, int t_end, int c0, int dim, bool vector_rows) {
  using Tl = Tile<kItems>;
  constexpr int kVec = 16 / sizeof(T), kVecPerRow = kWarps / kVec;
  if (vector_rows) {
    for (int e = threadIdx.x; e < Tl::len * kVecPerRow; e += kThreads) {
      const int tt = e / kVecPerRow, v = e % kVecPerRow, t = t0 + tt, c = c0 + v * kVec;
      if (t >= t_end || c >= dim) continue;
      alignas(16) T vals[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) vals[j] = tile[(v * kVec + j) * Tl::raw_row + tt];
      *reinterpret_cast<uint4*>(dst + int64_t(t) * dim + c) = *reinterpret_cast<const uint4*>(vals);
    }
    return;
  }
  for (int e = threadIdx.x; e < Tl::len * kWarps; e += kThreads) {
    const int tt = e / kWarps, cc = e % kWarps, t = t0 + tt, c = c0 + cc;
    if (t < t_end && c < dim) dst[int64_t(t) * dim + c] = tile[cc * Tl::raw_row + tt];
  }
}

// tile[n][slot(tt)] = float(src[t0 + tt][n]), zeros past L. The scalar path walks (tt, n) incrementally
// to avoid a division by the run-time N per element; `vector_rows` (N a multiple of the 16-byte
// vector, aligned rows) moves 16-byte vectors.
template <typename T, int kItems>
__device__ __forceinline__ void load_state_tile(float* tile, const T* src, int t0, int L, int N, bool vector_rows) {
  using Tl = Tile<kItems>;
  constexpr int kVec = 16 / sizeof(T);
  if (vector_rows) {
    const int per_row = N / kVec;
    for (int e = threadIdx.x; e < Tl::len * per_row; e += kThreads) {
      // Slot-major: a warp stores 32 consecutive slots of each row (position-major order stored
      // 16 positions × 2 row groups per warp into 8 banks, 4-way conflicts; cuda_scan.md v18).
      const int v = e / Tl::len, slot = e - v * Tl::len, t = t0 + Tl::position(slot);
      alignas(16) T vals[kVec];
      if (t < L) {
        *reinterpret_cast<uint4*>(vals) = *reinterpret_cast<const uint4*>(src + int64_t(t) * N + v * kVec);
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) vals[j] = from_float<T>(0.0f);
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) tile[(v * kVec + j) * Tl::float_row + slot] = to_float(vals[j]);
    }
    return;
  }
  const int total = Tl::len * N, step_t = kThreads / N, step_n = kThreads % N;
  int tt = threadIdx.x / N, n = threadIdx.x % N;
  for (int e = threadIdx.x; e < total; e += kThreads) {
    const int t = t0 + tt;
    tile[n * Tl::float_row + Tl::slot(tt)] = t < L ? to_float(src[int64_t(t) * N + n]) : 0.0f;
    tt += step_t;
    n += step_n;
    if (n >= N) {
      n -= N;
      ++tt;
    }
  }
}

// Inclusive scan over lanes of the maps h ↦ a·h + b (lane order = time order).
__device__ __forceinline__ void scan_pairs_forward(float& a, float& b, int lane) {
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    // Lanes with no predecessor at this distance compose with the identity (1, 0): no branch.
    const bool has = lane >= offset;
    const float prev_a = __shfl_up_sync(0xffffffffu, a, offset);
    const float prev_b = __shfl_up_sync(0xffffffffu, b, offset);
    b = fmaf(a, has ? prev_b : 0.0f, b);
    a *= has ? prev_a : 1.0f;
  }
}

// The same from the last lane backwards: lane l ends with the composition of lanes l..31.
__device__ __forceinline__ void scan_pairs_reverse(float& a, float& b, int lane) {
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const bool has = lane + offset < 32;
    const float next_a = __shfl_down_sync(0xffffffffu, a, offset);
    const float next_b = __shfl_down_sync(0xffffffffu, b, offset);
    b = fmaf(a, has ? next_b : 0.0f, b);
    a *= has ? next_a : 1.0f;
  }
}

template <int kItems>
constexpr size_t forward_smem_bytes(int N, size_t elem) {
  const size_t floats = 2 * kWarps * N + 2 * size_t(N) * Tile<kItems>::float_row;
  return floats * 4 + 3 * kWarps * Tile<kItems>::raw_row * elem;
}

// The output pass over one split of the length (all of it when unsplit), from the split's incoming
// state. kFixedN > 0: the state size is a compile-time constant and the per-state loop is unrolled.
// kPrefetch (N compile-time, vector rows): the next chunk's inputs are read into registers while
// this chunk's output is written (RowVectors).
template <typename T, int kItems, int kFixedN = 0, int kMinBlocks = (kItems > 8 ? 2 : 3), bool kPrefetch = false>
__global__ void __launch_bounds__(kThreads, kMinBlocks) scan_forward_kernel(ScanArgs p) {
  static_assert(!kPrefetch || kFixedN > 0, "prefetch shares need a compile-time N");
  using Tl = Tile<kItems>;
  const int N = kFixedN > 0 ? kFixedN : p.nstate, dim = p.dim, L = p.L;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c0 = blockIdx.x * kWarps, b = blockIdx.y, split = blockIdx.z;
  const int c = c0 + warp;
  const bool active = c < dim;

  extern __shared__ float4 smem_vec[];
  float* A2 = reinterpret_cast<float*>(smem_vec);  // A·log2(e), [kWarps][N]
  float* state = A2 + kWarps * N;                  // carried h, [kWarps][N]
  float* B_tile = state + kWarps * N;              // [N][float_row]
  float* C_tile = B_tile + N * Tl::float_row;
  T* delta_tile = reinterpret_cast<T*>(C_tile + N * Tl::float_row);
  T* u_tile = delta_tile + kWarps * Tl::raw_row;  // holds the output once a warp is done with u
  T* z_tile = u_tile + kWarps * Tl::raw_row;

  const SplitBounds bounds = split_bounds(p, b, split);
  const int s_begin = bounds.begin, s_end = bounds.end, valid_end = bounds.valid_end;

  for (int e = threadIdx.x; e < kWarps * N; e += kThreads) {
    const int ch = c0 + e / N, n = e % N;
    float h = 0.0f;
    if (ch < dim) {
      if (p.split_init)
        h = p.split_init[((int64_t(b) * p.splits + split) * dim + ch) * N + n];
      else if (p.initial_state)
        h = p.initial_state[(int64_t(b) * dim + ch) * N + n];
    }
    A2[e] = scaled_A(p, ch, n, N);
    state[e] = h;
  }
  const int64_t seq = int64_t(b) * L;
  const T* u = static_cast<const T*>(p.u) + seq * dim;
  const T* delta = static_cast<const T*>(p.delta) + seq * dim;
  const T* z = p.z ? static_cast<const T*>(p.z) + seq * dim : nullptr;
  const T* Bg = static_cast<const T*>(p.B) + seq * N;
  const T* Cg = static_cast<const T*>(p.C) + seq * N;
  const float D_c = active && p.D ? p.D[c] : 0.0f;
  const float bias = active && p.delta_bias ? p.delta_bias[c] : 0.0f;
  // Fetches happen unconditionally (past the split they read the next split's first chunk, past L
  // nothing), so the registers are provably dead during the state loop.
  RowVectors<T, kItems, kWarps> next_delta, next_u, next_z;
  RowVectors<T, kItems, (kFixedN > 0 ? kFixedN : 16), true> next_B, next_C;
  auto fetch = [&](int t_next) {
    next_delta.fetch(delta, dim, t_next, L, c0, dim);
    next_u.fetch(u, dim, t_next, L, c0, dim);
    if (z) next_z.fetch(z, dim, t_next, L, c0, dim);
    next_B.fetch(Bg, N, t_next, L, 0, N);
    next_C.fetch(Cg, N, t_next, L, 0, N);
  };
  if constexpr (kPrefetch) fetch(s_begin);

  for (int t0 = s_begin; t0 < s_end; t0 += Tl::len) {
    __syncthreads();  // the previous chunk's tiles are consumed
    if constexpr (Tl::len == kLaneStateChunk) {
      if (p.chunk_states) {  // training: the state before this chunk, for the backward
        const int chunks = (L + Tl::len - 1) / Tl::len;
        float* dst = p.chunk_states + ((int64_t(b) * chunks + t0 / Tl::len) * dim + c0) * N;
        for (int e = threadIdx.x; e < kWarps * N; e += kThreads)
          if (c0 + e / N < dim) dst[e] = state[e];
      }
    }
    if constexpr (kPrefetch) {
      next_delta.put_channels(delta_tile);
      next_u.put_channels(u_tile);
      if (z) next_z.put_channels(z_tile);
      next_B.put_states(B_tile);
      next_C.put_states(C_tile);
    } else {
      load_channel_tile<T, kItems>(delta_tile, delta, t0, L, c0, dim, p.vector_channels);
      load_channel_tile<T, kItems>(u_tile, u, t0, L, c0, dim, p.vector_channels);
      if (z) load_channel_tile<T, kItems>(z_tile, z, t0, L, c0, dim, p.vector_channels);
      load_state_tile<T, kItems>(B_tile, Bg, t0, L, N, p.vector_states);
      load_state_tile<T, kItems>(C_tile, Cg, t0, L, N, p.vector_states);
    }
    __syncthreads();

    if (active) {
      const int item0 = lane * kItems;
      float dl[kItems], uu[kItems], du[kItems], y[kItems];
      float lane_delta = 0.0f;  // Σ δ' over the lane's items: its decay product is exp2(A2·Σδ')
      load_items<T, kItems>(delta_tile + warp * Tl::raw_row + item0, dl);
      load_items<T, kItems>(u_tile + warp * Tl::raw_row + item0, uu);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float x = dl[i] + bias;
        dl[i] = t0 + item0 + i < valid_end ? (p.softplus ? softplus(x) : x) : 0.0f;
        du[i] = dl[i] * uu[i];
        y[i] = D_c * uu[i];
        lane_delta += dl[i];
      }
#pragma unroll(kFixedN > 0 ? kFixedN : 1)
      for (int n = 0; n < N; ++n) {
        const float a2 = A2[warp * N + n];
        float Bv[kItems], Cv[kItems], a[kItems], bv[kItems];
        load_lane_items<kItems>(B_tile + n * Tl::float_row, lane, Bv);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          a[i] = exp2f(dl[i] * a2);
          bv[i] = du[i] * Bv[i];
        }
        float pa = exp2f(lane_delta * a2), pb = bv[0];
#pragma unroll
        for (int i = 1; i < kItems; ++i) pb = fmaf(a[i], pb, bv[i]);
        scan_pairs_forward(pa, pb, lane);
        const float h0 = state[warp * N + n];
        float ea = __shfl_up_sync(0xffffffffu, pa, 1), eb = __shfl_up_sync(0xffffffffu, pb, 1);
        if (lane == 0) ea = 1.0f, eb = 0.0f;
        load_lane_items<kItems>(C_tile + n * Tl::float_row, lane, Cv);
        float h = fmaf(ea, h0, eb);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          h = fmaf(a[i], h, bv[i]);
          y[i] = fmaf(Cv[i], h, y[i]);
        }
        __syncwarp();
        if (lane == 31) state[warp * N + n] = fmaf(pa, h0, pb);
      }
      float zz[kItems];
      if (z) load_items<T, kItems>(z_tile + warp * Tl::raw_row + item0, zz);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float gate = z ? zz[i] * sigmoid(zz[i]) : 1.0f;
        y[i] = t0 + item0 + i < valid_end ? y[i] * gate : 0.0f;
      }
      store_items<T, kItems>(u_tile + warp * Tl::raw_row + item0, y);
    }
    __syncthreads();
    if constexpr (kPrefetch) fetch(t0 + Tl::len);
    store_channel_tile<T, kItems>(static_cast<T*>(p.out) + seq * dim, u_tile, t0, s_end, c0, dim, p.vector_channels);
  }
  // Unsplit passes write the last state; split ones leave it to chain_splits_kernel.
  __syncthreads();
  if (p.splits == 1)
    for (int e = threadIdx.x; e < kWarps * N; e += kThreads)
      if (c0 + e / N < dim) p.last_state[(int64_t(b) * dim + c0) * N + e] = state[e];
}

// Summary of one split of the length: the state it leaves from a zero incoming state, and its Σδ'
// (split_state, split_delta_sum). No scan is needed: with S the sum of δ' after position t within
// the chunk, h_end = exp2(A2·S_chunk)·h_start + Σ_t exp2(A2·S)·δ'_t·u_t·B_t, every exponent ≤ 0.
// So per element-state: one exp and two multiplies, then one warp sum per state and chunk; the
// suffix sums S come from one scan of δ' per chunk, shared by all states.
template <typename T>
constexpr size_t summary_smem_bytes(int N, size_t elem) {
  return (2 * kWarps * N + size_t(N) * Tile<kForwardItems>::float_row) * 4 +
         2 * kWarps * Tile<kForwardItems>::raw_row * elem;
}

// kFixedN > 0: N is a compile-time constant (index arithmetic folds; two states overlap).
template <typename T, int kFixedN>
__global__ void __launch_bounds__(kThreads, 4) scan_summary_kernel(ScanArgs p) {
  constexpr int kItems = kForwardItems;
  using Tl = Tile<kItems>;
  const int N = kFixedN > 0 ? kFixedN : p.nstate, dim = p.dim, L = p.L;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Splits along x: the backward's states pass runs one per chunk, more than a y or z extent allows.
  const int c0 = blockIdx.z * kWarps, b = blockIdx.y, split = blockIdx.x;
  const int c = c0 + warp;
  const bool active = c < dim;

  extern __shared__ float4 smem_vec[];
  float* A2 = reinterpret_cast<float*>(smem_vec);  // A·log2(e), [kWarps][N]
  float* state = A2 + kWarps * N;                  // end state from zero so far, [kWarps][N]
  float* B_tile = state + kWarps * N;              // [N][float_row]
  T* delta_tile = reinterpret_cast<T*>(B_tile + N * Tl::float_row);
  T* u_tile = delta_tile + kWarps * Tl::raw_row;

  const SplitBounds bounds = split_bounds(p, b, split);
  const int s_begin = bounds.begin, s_end = bounds.end, valid_end = bounds.valid_end;
  for (int e = threadIdx.x; e < kWarps * N; e += kThreads) {
    const int ch = c0 + e / N, n = e % N;
    A2[e] = scaled_A(p, ch, n, N);
    state[e] = 0.0f;
  }
  const int64_t seq = int64_t(b) * L;
  const T* u = static_cast<const T*>(p.u) + seq * dim;
  const T* delta = static_cast<const T*>(p.delta) + seq * dim;
  const T* Bg = static_cast<const T*>(p.B) + seq * N;
  const float bias = active && p.delta_bias ? p.delta_bias[c] : 0.0f;
  float delta_sum = 0.0f;

  for (int t0 = s_begin; t0 < s_end; t0 += Tl::len) {
    __syncthreads();
    load_channel_tile<T, kItems>(delta_tile, delta, t0, L, c0, dim, p.vector_channels);
    load_channel_tile<T, kItems>(u_tile, u, t0, L, c0, dim, p.vector_channels);
    load_state_tile<T, kItems>(B_tile, Bg, t0, L, N, p.vector_states);
    __syncthreads();
    if (!active) continue;
    const int item0 = lane * kItems;
    float dl[kItems], du[kItems], after[kItems];  // after: Σ δ' past the item, within the chunk
    load_items<T, kItems>(delta_tile + warp * Tl::raw_row + item0, dl);
    load_items<T, kItems>(u_tile + warp * Tl::raw_row + item0, du);
    float lane_delta = 0.0f;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const float x = dl[i] + bias;
      dl[i] = t0 + item0 + i < valid_end ? (p.softplus ? softplus(x) : x) : 0.0f;
      du[i] *= dl[i];
      lane_delta += dl[i];
    }
    float through_lane = lane_delta;  // inclusive prefix over lanes
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
      const float prev = __shfl_up_sync(0xffffffffu, through_lane, offset);
      through_lane += lane >= offset ? prev : 0.0f;
    }
    const float chunk_delta = __shfl_sync(0xffffffffu, through_lane, 31);
    float rest = chunk_delta - through_lane;
#pragma unroll
    for (int i = kItems - 1; i >= 0; --i) {
      after[i] = rest;
      rest += dl[i];
    }
    delta_sum += chunk_delta;
#pragma unroll 2
    for (int n = 0; n < N; ++n) {
      const float a2 = A2[warp * N + n];
      float Bv[kItems];
      load_lane_items<kItems>(B_tile + n * Tl::float_row, lane, Bv);
      float q = 0.0f;
#pragma unroll
      for (int i = 0; i < kItems; ++i) q = fmaf(exp2f(a2 * after[i]), du[i] * Bv[i], q);
      q = warp_sum(q);
      if (lane == 0) state[warp * N + n] = fmaf(exp2f(a2 * chunk_delta), state[warp * N + n], q);
    }
  }
  __syncthreads();
  if (active && lane == 0) p.split_delta_sum[(int64_t(b) * p.splits + split) * dim + c] = delta_sum;
  float* dst = p.split_state + (int64_t(b) * p.splits + split) * dim * N;
  for (int e = threadIdx.x; e < kWarps * N; e += kThreads)
    if (c0 + e / N < dim) dst[int64_t(c0) * N + e] = state[e];
}

// A chain kernel's thread: one (sequence b, channel c, state n), `index` into [batch, D, N], with
// A·log2(e); false past the last.
struct ChainThread {
  int64_t index;
  int n, c, b;
  float a2;
};
__device__ __forceinline__ bool chain_thread(const ScanArgs& p, ChainThread& t) {
  const int N = p.nstate, dim = p.dim;
  t.index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t.index >= int64_t(p.batch) * dim * N) return false;
  t.n = t.index % N, t.c = (t.index / N) % dim, t.b = t.index / (int64_t(N) * dim);
  t.a2 = p.A[t.c * N + t.n] * kLog2e;
  return true;
}

// Chains the splits: incoming state of split s = what split s−1 leaves from its own incoming state.
__global__ void chain_splits_kernel(ScanArgs p) {
  ChainThread t;
  if (!chain_thread(p, t)) return;
  float h = p.initial_state ? p.initial_state[t.index] : 0.0f;
  for (int s = 0; s < p.splits; ++s) {
    const int64_t at = ((int64_t(t.b) * p.splits + s) * p.dim + t.c) * p.nstate + t.n;
    // The last split's summary matters only for the last state; without p.last_state it may not exist.
    if (s + 1 == p.splits && !p.last_state) {
      p.split_init[at] = h;
      break;
    }
    const float from_zero = p.split_state[at];  // read first: split_init may be split_state
    p.split_init[at] = h;
    h = fmaf(exp2f(t.a2 * p.split_delta_sum[at / p.nstate]), h, from_zero);
  }
  if (p.last_state) p.last_state[t.index] = h;
}

// The state-group backward's carries across splits, last to first: split s starts its reverse walk
// with f = dL/dh at its last position from the positions after it, F_s (dlast_state, or 0, for the
// last split), and F_{s−1} = R_s + exp2(A2·Δ_s)·F_s from split s's summary (R_s in p.split_state,
// Δ_s = Σδ' in p.split_delta_sum). F_s goes to p.split_init.
__global__ void chain_splits_reverse_kernel(ScanArgs p) {
  ChainThread t;
  if (!chain_thread(p, t)) return;
  float carry = p.dlast_state ? p.dlast_state[t.index] : 0.0f;
  for (int s = p.splits - 1; s >= 0; --s) {
    const int64_t at = ((int64_t(t.b) * p.splits + s) * p.dim + t.c) * p.nstate + t.n;
    p.split_init[at] = carry;
    if (s > 0) carry = fmaf(exp2f(t.a2 * p.split_delta_sum[at / p.nstate]), carry, p.split_state[at]);
  }
}

// Forward for N = 16 in state groups: four threads per (sequence, channel), each owning 4 of its 16
// states, walk the positions in order with the states in registers. Per element-state that is one
// exp and four FMA-pipe instructions (δ'·A, δ'u·B, h, C·h), with no shuffles and no scan; the
// per-position work (softplus, the sum over the four groups, D skip, gate) is done once per
// (position, channel), shared out over the block's threads. Four threads a channel give four times
// the warps of one thread a channel (v13, latency-bound at one warp per scheduler) at the same cost
// per element-state.
//
// A block is kGroupWarps warps = 32 consecutive channels; lane k of warp g owns states 4g..4g+3 of
// channel k, so a warp's reads of B and C at a position are one broadcast (a block's shared-memory
// traffic, not its instructions, was the limit with the four groups of a channel in one warp). Tiles of kGroupTile
// positions of δ, u, z, B and C are copied into shared memory with cp.async one tile ahead. Per tile, three phases
// separated by block barriers:
//  1. each thread takes 4 consecutive channels of one position: δ' = softplus(δ + bias) and δ'·u
//     into `work`, and for bf16 B and C to float32;
//  2. each thread advances its 4 states over the tile's positions, writing its part of Σₙ C·h;
//  3. each thread (as in 1) sums the four parts, adds D·u, gates with z and stores the output.
// Few blocks for the GPU split the length as the lane-scan kernel does: a summary pass (this kernel
// without C, z and output) gives each split's end state from zero and Σδ'; the output pass chains
// those of the splits before its own into its true incoming state and reruns the split from it.
constexpr int kGroupStates = 4;                       // states per thread
constexpr int kGroupsPerChannel = 16 / kGroupStates;  // N = 16
constexpr int kGroupWarps = kGroupsPerChannel;        // warp g: states 4g..4g+3
constexpr int kGroupThreads = 32 * kGroupWarps;
constexpr int kGroupChannels = 32;  // a block's channels: one per lane
// Positions per staged tile: 32 halves the barriers per position of 16 (shape (4, 4096, 2048): 0.35
// against 0.42 ms); float32 tiles of 32 would pass the 48 KB of static shared memory.
template <typename T>
constexpr int kGroupTile = sizeof(T) == 2 ? 32 : 16;
constexpr int kGroupRun = 16;     // phase 2's positions between stores of their parts (8: 1.5–3% slower)
constexpr int kPairChannels = 4;  // phases 1 and 3: consecutive channels of one position per thread
constexpr int kPairThreadsPerPosition = kGroupChannels / kPairChannels;
static_assert(kPairChannels == 4 && kGroupsPerChannel == 4, "phases 1 and 3 move 4 channels or groups as a float4");
constexpr int kPairRowsPerPass = kGroupThreads / kPairThreadsPerPosition;  // positions phases 1 and 3 cover at once

template <typename T, int kTile>
struct alignas(16) GroupTile {
  T delta[kTile][kGroupChannels], u[kTile][kGroupChannels], z[kTile][kGroupChannels];
  T B[kTile][16], C[kTile][16];
};

// 2^x on the special-function unit, subnormal results flushed to zero (decays that small are 0 at
// float32 precision anyway): exp2f adds a range fix-up of 2–3 instructions around it.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// softplus(x) = log(1 + eˣ) (x for x > 20) without branches: log1pf branches on special inputs,
// which keeps the compiler from overlapping positions. With u = 1 + eˣ = 2^k·m, m in [0.75, 1.5):
// log(m) = 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.2 (odd series to s⁹), plus (eˣ − (u − 1))/u
// for the rounding of u (needed only while u < 2, where 1/u ≈ 2 − u suffices). Relative error
// about 2e-7.
__device__ __forceinline__ float softplus_branch_free(float x) {
  const float e = __expf(fminf(x, 20.0f)), u = 1.0f + e;
  const int k = (__float_as_int(u) - 0x3f400000) >> 23;
  const float m = __int_as_float(__float_as_int(u) - (k << 23));
  const float s = __fdividef(m - 1.0f, m + 1.0f), s2 = s * s;
  float series = 1.0f / 9.0f;
  series = fmaf(series, s2, 1.0f / 7.0f);
  series = fmaf(series, s2, 1.0f / 5.0f);
  series = fmaf(series, s2, 1.0f / 3.0f);
  const float log_m = 2.0f * s * fmaf(series, s2, 1.0f);
  const float rounding = (e - (u - 1.0f)) * fmaxf(2.0f - u, 0.0f);
  const float result = fmaf(float(k), kLn2, log_m) + rounding;
  return x > 20.0f ? x : result;
}

// log2(x) on the special-function unit (absolute error about 2^-22 for x in (1, 2]).
__device__ __forceinline__ float log2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// softplus(x) = max(x, 0) + log(1 + e) with e = e^−|x| ∈ (0, 1], for 16-bit inputs, whose δ already
// carries a relative error of 2^-9: about 15 instructions where softplus_branch_free takes about
// 25 (phase 1 of the state-group kernels is a sixth of their instructions). log(1 + e) is the
// special-function unit's log2 of u = 1 + e, plus the rounding of u (e − (u − 1)) for the e that
// u cannot hold, or for e < 1/32, where the log2's absolute error would be large against the
// result, the series e − e²/2 + e³/3 − e⁴/4 (its error e⁵/5 is 2e-7 of the result there). By those
// bounds (not measured apart: the bf16 scan tests check its outputs), relative error about 6e-6 at
// most (e = 1/32, the log2's 2^-22 against log(1 + e) ≈ 0.03), far below that of a bf16 δ.
__device__ __forceinline__ float softplus_fast(float x) {
  const float e = exp2_approx(-fabsf(x) * kLog2e), u = 1.0f + e;
  const float from_log = fmaf(log2_approx(u), kLn2, e - (u - 1.0f));
  const float series = e * fmaf(e, fmaf(e, fmaf(e, -0.25f, 1.0f / 3.0f), -0.5f), 1.0f);
  return fmaxf(x, 0.0f) + (e < 1.0f / 32.0f ? series : from_log);
}

// softplus for the state-group kernels' inputs of type T.
template <typename T>
__device__ __forceinline__ float group_softplus(float x) {
  if constexpr (sizeof(T) == 2)
    return softplus_fast(x);
  else
    return softplus_branch_free(x);
}

// One tile to stage: dst[tt][cc] = src[t0 + tt][c0 + cc]; no copy when src is null.
template <typename T, int kRows, int kCols>
struct TileRows {
  T (*dst)[kCols];
  const T* src;
};
template <typename T, int kRows, int kCols>
__device__ __forceinline__ TileRows<T, kRows, kCols> tile_rows(T (&dst)[kRows][kCols], const T* src) {
  return {dst, src};
}

// Stages tiles of one layout (rows of `stride` elements, the same t0, c0 and cols), shared out over
// kStagers threads; zeros outside [0, L) × [0, cols). With `vector_rows` (cols a multiple of the
// 16-byte vector, aligned rows) asynchronous 16-byte copies, else plain element copies. A thread's
// place and source offset are worked out once for all the tiles (per tile they were a tenth of
// the forward's instructions).
template <int kStagers, typename T, int kRows, int kCols, typename... Tiles>
__device__ __forceinline__ void stage_rows(int64_t stride, int t0, int L, int c0, int cols, bool vector_rows,
                                           TileRows<T, kRows, kCols> first, Tiles... rest) {
  if (vector_rows) {
    constexpr int kVec = 16 / sizeof(T), kPerRow = kCols / kVec, kVectors = kRows * kPerRow;
    static_assert(kCols % kVec == 0, "whole vectors");
#pragma unroll
    for (int k = 0; k < (kVectors + kStagers - 1) / kStagers; ++k) {
      const int e = threadIdx.x + kStagers * k, tt = e / kPerRow, col = e % kPerRow * kVec;
      if (kVectors % kStagers != 0 && e >= kVectors) break;
      const bool valid = t0 + tt < L && c0 + col < cols;
      const int64_t at = valid ? int64_t(t0 + tt) * stride + c0 + col : 0;
      auto copy = [&](const TileRows<T, kRows, kCols>& tile) {
        if (tile.src) copy_async_16(&tile.dst[tt][col], tile.src + at, valid);
      };
      copy(first);
      (copy(rest), ...);
    }
    return;
  }
  for (int e = threadIdx.x; e < kRows * kCols; e += kStagers) {
    const int tt = e / kCols, col = e % kCols;
    const bool valid = t0 + tt < L && c0 + col < cols;
    const int64_t at = int64_t(t0 + tt) * stride + c0 + col;
    auto copy = [&](const TileRows<T, kRows, kCols>& tile) {
      if (tile.src) tile.dst[tt][col] = valid ? tile.src[at] : from_float<T>(0.0f);
    };
    copy(first);
    (copy(rest), ...);
  }
}

// A staged tile's B and C rows (bf16) to float32 rows, 4 elements a thread at a time, B's rows then
// C's; a summary pass that needs only one of them leaves the other out.
template <typename T, int kTile>
__device__ __forceinline__ void convert_state_rows(const GroupTile<T, kTile>& tile, float (&dst)[2][kTile][16],
                                                   bool with_B, bool with_C) {
  constexpr int kPerMatrix = kTile * 16 / 4;
  static_assert(2 * kPerMatrix % kGroupThreads == 0, "whole passes");
#pragma unroll
  for (int e = threadIdx.x; e < 2 * kPerMatrix; e += kGroupThreads) {
    const int which = e / kPerMatrix, offset = e % kPerMatrix * 4;
    if (!(which ? with_C : with_B)) continue;
    float vals[4];
    load_items<T, 4>((which ? &tile.C[0][0] : &tile.B[0][0]) + offset, vals);
    *reinterpret_cast<float4*>(&dst[which][0][0] + offset) = make_float4(vals[0], vals[1], vals[2], vals[3]);
  }
}

// kSummary: the summary pass of one split (end state from zero, Σδ'); else the output pass.
template <typename T, bool kSummary, int kTile = kGroupTile<T>>
__global__ void __launch_bounds__(kGroupThreads, 4) scan_group_kernel(ScanArgs p) {
  constexpr int N = 16;
  constexpr bool kConvert = sizeof(T) != sizeof(float);  // bf16 B and C become float32 once per tile
  static_assert(kTile % kPairRowsPerPass == 0, "phases 1 and 3 cover a tile in whole passes");
  constexpr int kPasses = kTile / kPairRowsPerPass;
  static_assert(kLaneStateChunk % kTile == 0 && 32 % kTile == 0, "chunk states fall on tile starts");
  __shared__ GroupTile<T, kTile> tiles[2];
  __shared__ alignas(16) float BC_f32[kConvert ? 2 : 1][kTile][N];  // B, then C
  __shared__ alignas(16) float2 work[kTile][kGroupChannels];        // δ', δ'·u
  // Each group's part of Σₙ C·h: [position][channel][group].
  __shared__ alignas(16) float parts[kSummary ? 1 : kTile][kGroupsPerChannel][kGroupChannels];

  const int dim = p.dim, L = p.L;
  const int c0 = blockIdx.x * kGroupChannels, b = blockIdx.y, split = blockIdx.z;
  const SplitBounds bounds = split_bounds(p, b, split);
  const int64_t seq = int64_t(b) * L;
  const T* u = static_cast<const T*>(p.u) + seq * dim;
  const T* delta = static_cast<const T*>(p.delta) + seq * dim;
  const T* z = !kSummary && p.z ? static_cast<const T*>(p.z) + seq * dim : nullptr;
  const T* Bg = static_cast<const T*>(p.B) + seq * N;
  const T* Cg = static_cast<const T*>(p.C) + seq * N;
  T* out = kSummary ? nullptr : static_cast<T*>(p.out) + seq * dim;

  // Phase 2: this thread's channel and states.
  const int channel = threadIdx.x % kGroupChannels, group = threadIdx.x / kGroupChannels;
  const int c = c0 + channel, n0 = group * kGroupStates;
  const bool active = c < dim;
  float A2[kGroupStates], h[kGroupStates];
#pragma unroll
  for (int j = 0; j < kGroupStates; ++j) {
    A2[j] = active ? p.A[c * N + n0 + j] * kLog2e : 0.0f;
    h[j] = !kSummary && active && p.initial_state ? p.initial_state[(int64_t(b) * dim + c) * N + n0 + j] : 0.0f;
  }
  float delta_sum = 0.0f;

  // Phases 1 and 3: kPairChannels consecutive channels of one position per pass.
  const int pair_row = threadIdx.x / kPairThreadsPerPosition;
  const int pair_ch = threadIdx.x % kPairThreadsPerPosition * kPairChannels, pair_c = c0 + pair_ch;
  float bias[kPairChannels], D[kPairChannels];
#pragma unroll
  for (int i = 0; i < kPairChannels; ++i) {
    const bool valid = pair_c + i < dim;
    bias[i] = valid && p.delta_bias ? p.delta_bias[pair_c + i] : 0.0f;
    D[i] = valid && p.D ? p.D[pair_c + i] : 0.0f;
  }

  auto stage = [&](GroupTile<T, kTile>& tile, int t0) {
    stage_rows<kGroupThreads>(dim, t0, L, c0, dim, p.vector_channels, tile_rows(tile.delta, delta),
                              tile_rows(tile.u, u), tile_rows(tile.z, z));
    stage_rows<kGroupThreads>(N, t0, L, 0, N, p.vector_states, tile_rows(tile.B, Bg),
                              tile_rows(tile.C, kSummary ? nullptr : Cg));
    commit_async_copies();
  };
  stage(tiles[0], bounds.begin);
  if (!kSummary && active) {
    // The incoming state from the summaries of the splits before this one, chained here while the
    // first tile is in flight (as chain_splits_kernel does, one launch fewer).
    for (int s = 0; s < split; ++s) {
      const int64_t at = (int64_t(b) * p.splits + s) * dim + c;
      const float4 from_zero = *reinterpret_cast<const float4*>(p.split_state + at * N + n0);
      const float decay = p.split_delta_sum[at];
      const float f[kGroupStates] = {from_zero.x, from_zero.y, from_zero.z, from_zero.w};
#pragma unroll
      for (int j = 0; j < kGroupStates; ++j) h[j] = fmaf(exp2f(A2[j] * decay), h[j], f[j]);
    }
  }
  // Training: the state before every p.state_stride positions goes to p.chunk_states. The next
  // such tile start and its row, so that the loop divides nothing.
  int next_chunk_start = INT_MAX;
  float* next_chunk_state = nullptr;
  if (!kSummary && p.chunk_states && active) {
    const int stride = p.state_stride, chunks = (L + stride - 1) / stride, first = (bounds.begin + stride - 1) / stride;
    next_chunk_start = first * stride;
    next_chunk_state = p.chunk_states + ((int64_t(b) * chunks + first) * dim + c) * N + n0;
  }
  int buffer = 0;
  for (int t0 = bounds.begin; t0 < bounds.end; t0 += kTile, buffer ^= 1) {
    wait_async_copies();
    __syncthreads();  // every thread's copies have landed, and the other buffer is read no more
    if (t0 + kTile < bounds.end) stage(tiles[buffer ^ 1], t0 + kTile);
    const GroupTile<T, kTile>& tile = tiles[buffer];

    // 1: δ' and δ'·u; B and C to float32. The softplus choice is made once, outside the loop, so
    // that a thread's channels are one basic block the compiler can overlap (v13), and every pass's
    // inputs are loaded before the first pass's stores, which the compiler would not move loads across.
    auto deltas = [&](auto with_softplus) {
      float dl[kPasses][kPairChannels], uu[kPasses][kPairChannels];
#pragma unroll
      for (int pass = 0; pass < kPasses; ++pass) {
        load_items<T, kPairChannels>(&tile.delta[pair_row + pass * kPairRowsPerPass][pair_ch], dl[pass]);
        load_items<T, kPairChannels>(&tile.u[pair_row + pass * kPairRowsPerPass][pair_ch], uu[pass]);
      }
#pragma unroll
      for (int pass = 0; pass < kPasses; ++pass) {
        const int pair_tt = pair_row + pass * kPairRowsPerPass;
        // Past the sequence's length δ' = 0: the states stay as they are.
        const bool valid = t0 + pair_tt < bounds.valid_end;
        float2 w[kPairChannels];
#pragma unroll
        for (int i = 0; i < kPairChannels; ++i) {
          float d = dl[pass][i] + bias[i];
          if constexpr (decltype(with_softplus)::value) d = group_softplus<T>(d);
          d = valid ? d : 0.0f;
          w[i] = make_float2(d, d * uu[pass][i]);
        }
        float4* dst = reinterpret_cast<float4*>(&work[pair_tt][pair_ch]);
        dst[0] = make_float4(w[0].x, w[0].y, w[1].x, w[1].y);
        dst[1] = make_float4(w[2].x, w[2].y, w[3].x, w[3].y);
      }
    };
    if (p.softplus)
      deltas(std::true_type{});
    else
      deltas(std::false_type{});
    if constexpr (kConvert) convert_state_rows(tile, BC_f32, true, !kSummary);
    __syncthreads();

    if (t0 == next_chunk_start) {  // training: the state before the chunk
#pragma unroll
      for (int j = 0; j < kGroupStates; ++j) next_chunk_state[j] = h[j];
      next_chunk_start += p.state_stride;
      next_chunk_state += int64_t(dim) * N;
    }
    // 2: the states over the tile, kGroupRun positions at a time. A run's parts of Σₙ C·h stay in
    // registers until its end: with a shared-memory store after each position the compiler kept
    // the next position's loads behind it, and the positions ran one after another, each waiting
    // on its own loads and exponentials (docs/perf/cuda_scan.md v25).
    const float* B_rows = kConvert ? &BC_f32[0][0][0] : reinterpret_cast<const float*>(&tile.B[0][0]);
    const float* C_rows = kConvert ? &BC_f32[kConvert ? 1 : 0][0][0] : reinterpret_cast<const float*>(&tile.C[0][0]);
#pragma unroll 1
    for (int run = 0; run < kTile; run += kGroupRun) {
      float y[kGroupRun];
#pragma unroll
      for (int k = 0; k < kGroupRun; ++k) {
        const int tt = run + k;
        const float2 w = work[tt][channel];
        const float4 Bv = reinterpret_cast<const float4*>(B_rows + tt * N)[group];
        const float Bn[kGroupStates] = {Bv.x, Bv.y, Bv.z, Bv.w};
#pragma unroll
        for (int j = 0; j < kGroupStates; ++j) h[j] = fmaf(exp2_approx(w.x * A2[j]), h[j], w.y * Bn[j]);
        if constexpr (kSummary) {
          delta_sum += w.x;
        } else {
          const float4 Cv = reinterpret_cast<const float4*>(C_rows + tt * N)[group];
          // One multiply and three FMAs (a pairwise sum costs one instruction more; the run's
          // positions hide the chain's latency).
          y[k] = Cv.x * h[0];
          y[k] = fmaf(Cv.y, h[1], y[k]);
          y[k] = fmaf(Cv.z, h[2], y[k]);
          y[k] = fmaf(Cv.w, h[3], y[k]);
        }
      }
      if constexpr (!kSummary) {
#pragma unroll
        for (int k = 0; k < kGroupRun; ++k) parts[run + k][group][channel] = y[k];
      }
    }

    // 3: Σₙ C·h, skip term, gate and output.
    if constexpr (!kSummary) {
      __syncthreads();
      // As in phase 1, every pass's loads come before the first pass's stores (to device memory
      // through a generic pointer, which the compiler cannot tell from shared memory).
      auto outputs = [&](auto gated) {
        float uu[kPasses][kPairChannels], zz[kPasses][kPairChannels] = {}, sums[kPasses][kPairChannels];
#pragma unroll
        for (int pass = 0; pass < kPasses; ++pass) {
          const int pair_tt = pair_row + pass * kPairRowsPerPass;
          load_items<T, kPairChannels>(&tile.u[pair_tt][pair_ch], uu[pass]);
          if constexpr (decltype(gated)::value) load_items<T, kPairChannels>(&tile.z[pair_tt][pair_ch], zz[pass]);
          float4 part[kGroupsPerChannel];
#pragma unroll
          for (int g = 0; g < kGroupsPerChannel; ++g)
            part[g] = *reinterpret_cast<const float4*>(&parts[pair_tt][g][pair_ch]);
          sums[pass][0] = (part[0].x + part[1].x) + (part[2].x + part[3].x);
          sums[pass][1] = (part[0].y + part[1].y) + (part[2].y + part[3].y);
          sums[pass][2] = (part[0].z + part[1].z) + (part[2].z + part[3].z);
          sums[pass][3] = (part[0].w + part[1].w) + (part[2].w + part[3].w);
        }
#pragma unroll
        for (int pass = 0; pass < kPasses; ++pass) {
          const int t = t0 + pair_row + pass * kPairRowsPerPass;
          if (t >= bounds.end) break;
          float result[kPairChannels];
#pragma unroll
          for (int i = 0; i < kPairChannels; ++i) {
            result[i] = fmaf(D[i], uu[pass][i], sums[pass][i]);
            // y·z·σ(z) = y·z / (1 + e^−z); the fast division gives 0 for a denominator past 2^126.
            if constexpr (decltype(gated)::value) result[i] *= __fdividef(zz[pass][i], 1.0f + __expf(-zz[pass][i]));
            result[i] = select_computed(t < bounds.valid_end, result[i], 0.0f);
          }
          T* row = out + int64_t(t) * dim + pair_c;
          if (p.vector_channels) {
            if (pair_c < dim) store_items<T, kPairChannels>(row, result);
          } else {
#pragma unroll
            for (int i = 0; i < kPairChannels; ++i)
              if (pair_c + i < dim) row[i] = from_float<T>(result[i]);
          }
        }
      };
      if (z)
        outputs(std::true_type{});
      else
        outputs(std::false_type{});
    }
  }
  if (!active) return;
  if constexpr (kSummary) {
    const int64_t at = (int64_t(b) * p.splits + split) * dim + c;
    if (group == 0) p.split_delta_sum[at] = delta_sum;
#pragma unroll
    for (int j = 0; j < kGroupStates; ++j) p.split_state[at * N + n0 + j] = h[j];
  } else if (split == p.splits - 1) {  // the state after the last split (which has no summary)
#pragma unroll
    for (int j = 0; j < kGroupStates; ++j) p.last_state[(int64_t(b) * dim + c) * N + n0 + j] = h[j];
  }
}

// Backward for bf16 with N = 16 in the forward's state groups (lane = channel, warp g = states
// 4g..4g+3 of the block's 32 channels), restarting from the states the training forward kept at
// every tile start (scan_state_stride: kGroupBackTile positions apart). Tiles are walked last to
// first, the previous tile's inputs copied in (cp.async) while this one is worked on; per tile,
// between block barriers:
//  1. per (position, channel), 4 channels a thread: δ', δ'·u and dy = dout·SiLU(z) into `work`, B
//     and C to float32;
//  2. each thread runs its 4 states forward from the kept state over the tile's first three
//     sub-tiles of kGroupBackSub positions, keeping the state at each sub-tile start (shared
//     memory); then per sub-tile, last to first, it recomputes the sub-tile's states into registers
//     and walks them backwards (with its part of Σₙ C·h per position, for dz): G = dL/dh = f + C·dy,
//     f = a·G carried to the position before; per position its parts of Σₙ G·a·h_prev·A (dδ') and
//     Σₙ G·B (du, dδ'), and dA; dB = G·δ'u and dC = dy·h are summed over the warp's 32 channels by
//     a reduce-scatter of shuffles, four positions at a time (a warp's sums are its own states':
//     nothing to add across warps);
//  3. after each half tile, per (position, channel), 4 channels a thread: the four groups' parts
//     summed into du, dδ and dz; the half tile's dB and dC rows added to device memory with 16-byte
//     atomics. (Parts for half a tile keep the block within 3 per SM: 72 KB, 168 registers.)
// Per element-state 2.75 exps (checkpoints, recompute, reverse) against the lane scans' 2, but no
// shuffle scans: ≈ 40 issued instructions (ncu, v21c) against ≈ 54. Its limit is the shared-memory
// data pipe, so shared-memory traffic is what it economises (docs/perf/cuda_scan.md v21).
constexpr int kGroupBackTile = 32;
constexpr int kGroupBackSub = 8;  // positions whose states a thread holds in registers at once
constexpr int kGroupBackSubs = kGroupBackTile / kGroupBackSub;
constexpr int kGroupBackHalf = kGroupBackTile / 2;  // phase 3 runs per half tile
static_assert(kGroupBackHalf == kPairRowsPerPass, "phase 3 covers a half tile in one pass, phase 1 a tile in two");

struct alignas(16) GroupBackShared {
  GroupTile<__nv_bfloat16, kGroupBackTile> tiles[2];
  __nv_bfloat16 dout_tiles[2][kGroupBackTile][kGroupChannels];
  float BC[2][kGroupBackTile][16];  // B, C in float32
  // δ', δ'·u and dy apart: the recomputing passes read only the first two (8 bytes a lane).
  float2 work[kGroupBackTile][kGroupChannels];
  float dy[kGroupBackTile][kGroupChannels];
  float4 checkpoints[kGroupBackSubs - 1][kGroupThreads];  // each thread's states at sub-tiles 1..
  // Per half tile: each group's parts of Σₙ C·h, of Σₙ G·a·h_prev·A and Σₙ G·B, and dB | dC rows.
  float y_parts[kGroupBackHalf][kGroupsPerChannel][kGroupChannels];
  float2 grad_parts[kGroupBackHalf][kGroupsPerChannel][kGroupChannels];
  float dBC[kGroupBackHalf][32];
};

// v[0..K) summed over the warp's 32 lanes, scattered: each round a lane keeps one half of its values
// (the upper one where its bit kOffset is set), adds the partner's copy of that half and sends the
// other; once one value is left the remaining rounds just add. With K = 32, lane l ends with the
// sum of v[l].
template <int K, int kOffset = 16>
__device__ __forceinline__ float reduce_scatter(const float (&v)[K], int lane) {
  if constexpr (K == 1) {
    float w = v[0];
#pragma unroll
    for (int offset = kOffset; offset > 0; offset /= 2) w += __shfl_xor_sync(0xffffffffu, w, offset);
    return w;
  } else {
    const bool upper = lane & kOffset;
    float kept[K / 2];
#pragma unroll
    for (int k = 0; k < K / 2; ++k) {
      const float send = upper ? v[k] : v[k + K / 2], keep = upper ? v[k + K / 2] : v[k];
      kept[k] = keep + __shfl_xor_sync(0xffffffffu, send, kOffset);
    }
    return reduce_scatter<K / 2, kOffset / 2>(kept, lane);
  }
}

// kSummary: the summary of one split of the length for the splits after it (run for splits 1..):
// the walk of G from zero, only f = a·(C·dy + f), ending at Σₜ (Π_{τ ≤ t} a_τ)·C_t·dy_t over the
// split, and Σδ'. chain_splits_reverse_kernel turns them into every split's incoming f.
template <bool kSummary>
__global__ void __launch_bounds__(kGroupThreads, 3) scan_group_backward_kernel(ScanArgs p) {
  using T = __nv_bfloat16;
  constexpr int N = 16, kTile = kGroupBackTile;
  extern __shared__ float4 group_back_smem[];
  GroupBackShared& sh = *reinterpret_cast<GroupBackShared*>(group_back_smem);

  const int dim = p.dim, L = p.L;
  const int c0 = blockIdx.x * kGroupChannels, b = blockIdx.y, split = blockIdx.z + (kSummary ? 1 : 0);
  const SplitBounds bounds = split_bounds(p, b, split);
  const int len = bounds.valid_end;
  const int64_t seq = int64_t(b) * L;
  auto rows = [&](const void* base, int width) { return static_cast<const T*>(base) + seq * width; };
  const T* z = p.z ? rows(p.z, dim) : nullptr;
  const int lane = threadIdx.x % 32;

  // Phase 2: this thread's channel and states.
  const int channel = threadIdx.x % kGroupChannels, group = threadIdx.x / kGroupChannels;
  const int c = c0 + channel, n0 = group * kGroupStates;
  const bool active = c < dim;
  // f: dL/dh of the position before the current one from the positions after it (at the start,
  // from those after the split: the chained carry, or dlast_state past the last position).
  float A2[kGroupStates], A_nat[kGroupStates], f[kGroupStates], dA[kGroupStates];
  const int64_t split_row = (int64_t(b) * p.splits + split) * dim + c;
  const float* f_in = kSummary || !active ? nullptr
                      : p.splits > 1      ? p.split_init + split_row * N + n0
                      : p.dlast_state     ? p.dlast_state + (int64_t(b) * dim + c) * N + n0
                                          : nullptr;
#pragma unroll
  for (int j = 0; j < kGroupStates; ++j) {
    A_nat[j] = active ? p.A[c * N + n0 + j] : 0.0f;
    A2[j] = A_nat[j] * kLog2e;
    f[j] = f_in ? f_in[j] : 0.0f;
    dA[j] = 0.0f;
  }
  float delta_sum = 0.0f;  // summary: Σ δ' over the split

  // Phases 1 and 3: kPairChannels consecutive channels of one position per pass.
  const int pair_row = threadIdx.x / kPairThreadsPerPosition;
  const int pair_ch = threadIdx.x % kPairThreadsPerPosition * kPairChannels, pair_c = c0 + pair_ch;
  float bias[kPairChannels], D[kPairChannels], dD[kPairChannels] = {}, dbias[kPairChannels] = {};
#pragma unroll
  for (int i = 0; i < kPairChannels; ++i) {
    const bool valid = pair_c + i < dim;
    bias[i] = valid && p.delta_bias ? p.delta_bias[pair_c + i] : 0.0f;
    D[i] = valid && p.D ? p.D[pair_c + i] : 0.0f;
  }

  const int tiles = (L + kTile - 1) / kTile, first_tile = bounds.begin / kTile;
  auto stage = [&](int buffer, int t0) {
    GroupTile<T, kTile>& tile = sh.tiles[buffer];
    stage_rows<kGroupThreads>(dim, t0, L, c0, dim, p.vector_channels, tile_rows(tile.delta, rows(p.delta, dim)),
                              tile_rows(tile.u, kSummary ? nullptr : rows(p.u, dim)), tile_rows(tile.z, z),
                              tile_rows(sh.dout_tiles[buffer], rows(p.dout, dim)));
    stage_rows<kGroupThreads>(N, t0, L, 0, N, p.vector_states, tile_rows(tile.B, kSummary ? nullptr : rows(p.B, N)),
                              tile_rows(tile.C, rows(p.C, N)));
    commit_async_copies();
  };
  const int last_tile = (bounds.end - 1) / kTile;
  stage(0, last_tile * kTile);
  int buffer = 0;
  for (int k = last_tile; k >= first_tile; --k, buffer ^= 1) {
    const int t0 = k * kTile;
    // The kept state before this tile, read before the barrier so its latency overlaps it.
    float h_start[kGroupStates] = {};
    if (!kSummary && active) {
      const float4 v = *reinterpret_cast<const float4*>(p.chunk_states + ((int64_t(b) * tiles + k) * dim + c) * N + n0);
      h_start[0] = v.x, h_start[1] = v.y, h_start[2] = v.z, h_start[3] = v.w;
    }
    wait_async_copies();
    __syncthreads();  // the tile has landed; the other buffer and the last tile's parts are free
    if (k > first_tile) stage(buffer ^ 1, t0 - kTile);
    const GroupTile<T, kTile>& tile = sh.tiles[buffer];
    const auto& dout_tile = sh.dout_tiles[buffer];

    // 3 for the half tile from half0 (one pass of the pair layout): du, dδ, dz per (position,
    // channel), and the half tile's dB and dC rows into device memory.
    auto outputs = [&](int half0, auto with_softplus, auto gated) {
      const int r = pair_row, tt = half0 + r, t = t0 + tt;
      float dl[kPairChannels], uu[kPairChannels], zz[kPairChannels] = {}, dy_raw[kPairChannels];
      load_items<T, kPairChannels>(&tile.delta[tt][pair_ch], dl);
      load_items<T, kPairChannels>(&tile.u[tt][pair_ch], uu);
      load_items<T, kPairChannels>(&dout_tile[tt][pair_ch], dy_raw);
      if constexpr (decltype(gated)::value) load_items<T, kPairChannels>(&tile.z[tt][pair_ch], zz);
      const bool valid = t < len;
      float out_u[kPairChannels], out_delta[kPairChannels], out_z[kPairChannels];
#pragma unroll
      for (int i = 0; i < kPairChannels; ++i) {
        const float2 w = sh.work[tt][pair_ch + i];
        const float dy = sh.dy[tt][pair_ch + i];
        float y = D[i] * uu[i], dl_sum = 0.0f, gB_sum = 0.0f;
#pragma unroll
        for (int g = 0; g < kGroupsPerChannel; ++g) {
          y += sh.y_parts[r][g][pair_ch + i];
          const float2 gp = sh.grad_parts[r][g][pair_ch + i];
          dl_sum += gp.x;
          gB_sum += gp.y;
        }
        const float x = dl[i] + bias[i];
        float dsoftplus = 1.0f;  // dδ'/dδ
        if constexpr (decltype(with_softplus)::value) dsoftplus = select_computed(x <= 20.0f, sigmoid(x), 1.0f);
        // Selects, not ternaries: the four channels' sigmoid chains overlap (docs/perf/cuda_scan.md v26).
        out_delta[i] = select_computed(valid, fmaf(gB_sum, uu[i], dl_sum) * dsoftplus, 0.0f);
        out_u[i] = select_computed(valid, fmaf(gB_sum, w.x, dy * D[i]), 0.0f);
        if constexpr (decltype(gated)::value) {
          // d out/dz = y·σ(z)·(1 + z·(1 − σ(z)))
          const float s = sigmoid(zz[i]);
          out_z[i] = select_computed(valid, dy_raw[i] * y * s * fmaf(zz[i], 1.0f - s, 1.0f), 0.0f);
        }
        dD[i] = fmaf(dy, uu[i], dD[i]);
        dbias[i] += out_delta[i];
      }
      if (t >= L) return;
      const int64_t row = (seq + t) * dim + pair_c;
      T* du = static_cast<T*>(p.du) + row;
      T* ddelta = static_cast<T*>(p.ddelta) + row;
      T* dz = decltype(gated)::value ? static_cast<T*>(p.dz) + row : nullptr;
      if (p.vector_channels) {
        if (pair_c >= dim) return;
        store_items<T, kPairChannels>(du, out_u);
        store_items<T, kPairChannels>(ddelta, out_delta);
        if constexpr (decltype(gated)::value) store_items<T, kPairChannels>(dz, out_z);
        return;
      }
#pragma unroll
      for (int i = 0; i < kPairChannels; ++i) {
        if (pair_c + i >= dim) break;
        du[i] = from_float<T>(out_u[i]);
        ddelta[i] = from_float<T>(out_delta[i]);
        if constexpr (decltype(gated)::value) dz[i] = from_float<T>(out_z[i]);
      }
    };
    // 4 consecutive states of one position and matrix a thread.
    auto add_dBC = [&](int half0) {
      static_assert(kGroupBackHalf * 8 == kGroupThreads, "one 16-byte row piece a thread");
      const int r = threadIdx.x / 8, q = threadIdx.x % 8, which = q / 4, n = q % 4 * 4, t = t0 + half0 + r;
      if (t >= L) return;
      const float4 v = *reinterpret_cast<const float4*>(&sh.dBC[r][which * N + n]);
      float* at = (which ? p.dC : p.dB) + (seq + t) * N + n;
#if __CUDA_ARCH__ >= 900
      if (p.vector_state_grads) {
        atomicAdd(reinterpret_cast<float4*>(at), v);
        return;
      }
#endif
      atomicAdd(at, v.x), atomicAdd(at + 1, v.y), atomicAdd(at + 2, v.z), atomicAdd(at + 3, v.w);
    };

    // 1: δ', δ'·u, dy (the summary: δ' and dy side by side, its walk reading only them); B and C to
    // float32.
    auto inputs = [&](auto with_softplus, auto gated) {
#pragma unroll
      for (int tt = pair_row; tt < kTile; tt += kPairRowsPerPass) {
        float dl[kPairChannels], zz[kPairChannels], dy[kPairChannels];
        [[maybe_unused]] float uu[kPairChannels];  // not staged for the summary
        load_items<T, kPairChannels>(&tile.delta[tt][pair_ch], dl);
        if constexpr (!kSummary) load_items<T, kPairChannels>(&tile.u[tt][pair_ch], uu);
        load_items<T, kPairChannels>(&dout_tile[tt][pair_ch], dy);
        if constexpr (decltype(gated)::value) load_items<T, kPairChannels>(&tile.z[tt][pair_ch], zz);
        // Past the sequence's length δ' = 0 and dy = 0: the states stay, G passes through unchanged.
        const bool valid = t0 + tt < len;
#pragma unroll
        for (int i = 0; i < kPairChannels; ++i) {
          float d = dl[i] + bias[i];
          if constexpr (decltype(with_softplus)::value) d = group_softplus<T>(d);
          if constexpr (decltype(gated)::value) dy[i] *= __fdividef(zz[i], 1.0f + __expf(-zz[i]));
          d = valid ? d : 0.0f;
          if constexpr (kSummary) {
            sh.work[tt][pair_ch + i] = make_float2(d, valid ? dy[i] : 0.0f);
          } else {
            sh.work[tt][pair_ch + i] = make_float2(d, d * uu[i]);
            sh.dy[tt][pair_ch + i] = valid ? dy[i] : 0.0f;
          }
        }
      }
    };
    if (p.softplus)
      z ? inputs(std::true_type{}, std::true_type{}) : inputs(std::true_type{}, std::false_type{});
    else
      z ? inputs(std::false_type{}, std::true_type{}) : inputs(std::false_type{}, std::false_type{});
    convert_state_rows(tile, sh.BC, !kSummary, true);
    __syncthreads();

    // 2: the states forward to the sub-tile starts (kept in shared memory), then sub-tiles last to
    // first: recomputed into registers and walked backwards. After each half tile, 3: its outputs.
    auto row4 = [&](int which, int tt) { return reinterpret_cast<const float4*>(&sh.BC[which][tt][0])[group]; };
    if constexpr (kSummary) {
#pragma unroll 8
      for (int tt = kTile - 1; tt >= 0; --tt) {
        const float2 w = sh.work[tt][channel];  // δ', dy
        const float4 Cv = row4(1, tt);
        const float Cn[kGroupStates] = {Cv.x, Cv.y, Cv.z, Cv.w};
#pragma unroll
        for (int j = 0; j < kGroupStates; ++j) f[j] = exp2_approx(w.x * A2[j]) * fmaf(Cn[j], w.y, f[j]);
        delta_sum += w.x;
      }
      continue;
    }
    {
      float h[kGroupStates] = {h_start[0], h_start[1], h_start[2], h_start[3]};
      for (int q = 1; q < kGroupBackSubs; ++q) {
#pragma unroll
        for (int i = 0; i < kGroupBackSub; ++i) {
          const int tt = (q - 1) * kGroupBackSub + i;
          const float2 w = sh.work[tt][channel];
          const float4 Bv = row4(0, tt);
          const float Bn[kGroupStates] = {Bv.x, Bv.y, Bv.z, Bv.w};
#pragma unroll
          for (int j = 0; j < kGroupStates; ++j) h[j] = fmaf(exp2_approx(w.x * A2[j]), h[j], w.y * Bn[j]);
        }
        sh.checkpoints[q - 1][threadIdx.x] = make_float4(h[0], h[1], h[2], h[3]);
      }
    }
    for (int half = 1; half >= 0; --half) {
      const int half0 = half * kGroupBackHalf;
#pragma unroll 1
      for (int q = 2 * half + 1; q >= 2 * half; --q) {
        float h0[kGroupStates];  // the state before the sub-tile
        if (q == 0) {
#pragma unroll
          for (int j = 0; j < kGroupStates; ++j) h0[j] = h_start[j];
        } else {
          const float4 v = sh.checkpoints[q - 1][threadIdx.x];
          h0[0] = v.x, h0[1] = v.y, h0[2] = v.z, h0[3] = v.w;
        }
        float hs[kGroupBackSub][kGroupStates];  // h after each position of the sub-tile
#pragma unroll
        for (int i = 0; i < kGroupBackSub; ++i) {
          const int tt = q * kGroupBackSub + i;
          const float2 w = sh.work[tt][channel];
          const float4 Bv = row4(0, tt);
          const float Bn[kGroupStates] = {Bv.x, Bv.y, Bv.z, Bv.w};
#pragma unroll
          for (int j = 0; j < kGroupStates; ++j)
            hs[i][j] = fmaf(exp2_approx(w.x * A2[j]), i > 0 ? hs[i - 1][j] : h0[j], w.y * Bn[j]);
        }
        // Positions in fours (backwards): one reduce-scatter of their 32 dB/dC parts takes 31
        // shuffles where four of 8 parts took 36.
        constexpr int kReduced = 4;
#pragma unroll
        for (int quad = kGroupBackSub / kReduced - 1; quad >= 0; --quad) {
          float sums[8 * kReduced];  // per position, earliest first: dB parts (G·δ'u), dC parts (dy·h)
#pragma unroll
          for (int later = kReduced - 1; later >= 0; --later) {
            const int i = kReduced * quad + later, tt = q * kGroupBackSub + i;
            const float2 w = sh.work[tt][channel];
            const float dy = sh.dy[tt][channel];
            const float4 Bv = row4(0, tt), Cv = row4(1, tt);
            const float Bn[kGroupStates] = {Bv.x, Bv.y, Bv.z, Bv.w}, Cn[kGroupStates] = {Cv.x, Cv.y, Cv.z, Cv.w};
            float dl_part = 0.0f, gB_part = 0.0f;
#pragma unroll
            for (int j = 0; j < kGroupStates; ++j) {
              const float a = exp2_approx(w.x * A2[j]);
              const float h_prev = i > 0 ? hs[i - 1][j] : h0[j];
              const float G = fmaf(Cn[j], dy, f[j]);
              const float decay_grad = G * a * h_prev;  // dL/d(δ'·A)
              dl_part = fmaf(decay_grad, A_nat[j], dl_part);
              dA[j] = fmaf(decay_grad, w.x, dA[j]);
              gB_part = fmaf(G, Bn[j], gB_part);
              sums[8 * later + j] = G * w.y;
              sums[8 * later + 4 + j] = dy * hs[i][j];
              f[j] = a * G;
            }
            sh.grad_parts[tt - half0][group][channel] = make_float2(dl_part, gB_part);
            // Σ C·h here rather than where h is recomputed, which then reads no C.
            float y = Cn[0] * hs[i][0];
#pragma unroll
            for (int j = 1; j < kGroupStates; ++j) y = fmaf(Cn[j], hs[i][j], y);
            sh.y_parts[tt - half0][group][channel] = y;
          }
          const float total = reduce_scatter<8 * kReduced>(sums, lane);  // lane l: the sum of sums[l]
          const int later = lane >> 3, which = (lane >> 2) & 1, j = lane & 3;
          sh.dBC[q * kGroupBackSub + kReduced * quad + later - half0][which * N + n0 + j] = total;
        }
      }
      __syncthreads();
      if (p.softplus)
        z ? outputs(half0, std::true_type{}, std::true_type{}) : outputs(half0, std::true_type{}, std::false_type{});
      else
        z ? outputs(half0, std::false_type{}, std::true_type{}) : outputs(half0, std::false_type{}, std::false_type{});
      add_dBC(half0);
      if (half) __syncthreads();  // the parts are free for the first half
    }
  }
  if constexpr (kSummary) {
    if (!active) return;
    if (group == 0) p.split_delta_sum[split_row] = delta_sum;
#pragma unroll
    for (int j = 0; j < kGroupStates; ++j) p.split_state[split_row * N + n0 + j] = f[j];
    return;
  }
  if (active) {
    float* dinit = p.dinitial_state && split == 0 ? p.dinitial_state + (int64_t(b) * dim + c) * N + n0 : nullptr;
#pragma unroll
    for (int j = 0; j < kGroupStates; ++j) {
      atomicAdd(p.dA + c * N + n0 + j, dA[j]);
      if (dinit) dinit[j] = f[j];
    }
  }
#pragma unroll
  for (int i = 0; i < kPairChannels; ++i) {
    if (pair_c + i >= dim) break;
    if (p.dD) atomicAdd(p.dD + pair_c + i, dD[i]);
    if (p.ddelta_bias) atomicAdd(p.ddelta_bias + pair_c + i, dbias[i]);
  }
}

// A2, g_carry, h_start, dA_acc: [kWarps][N]; B and C tiles [N][float_row], each row overwritten by
// the block's dB (dC) sums once its state is done; dB, dC partials of each warp for two states in
// flight: [2 parity][2 (B, C)][kWarps][len]; storage tiles δ, u, z, dout: [kWarps][raw_row].
template <int kItems>
constexpr size_t backward_smem_bytes(int N, size_t elem) {
  using Tl = Tile<kItems>;
  const size_t floats = 4 * kWarps * N + 2 * size_t(N) * Tl::float_row + 2 * 2 * kWarps * Tl::len;
  return floats * 4 + 4 * kWarps * Tl::raw_row * elem;
}

// dst[t0 + tt][n] += tile[n][slot(tt)] for t0 + tt < t_end: float32 atomics into [.., N] rows,
// 16 bytes at a time with `vector_rows` (N a multiple of 4, 16-byte aligned dst).
template <int kItems>
__device__ __forceinline__ void add_state_tile(float* dst, const float* tile, int t0, int t_end, int N,
                                               bool vector_rows) {
  using Tl = Tile<kItems>;
  if (vector_rows) {
    const int per_row = N / 4;
    for (int e = threadIdx.x; e < Tl::len * per_row; e += kThreads) {
      // Four consecutive threads still cover one 64-byte row of dst (coalesced atomics), but walk
      // slots rather than positions: a warp's reads of a state row hit 8 consecutive slots in 4
      // rows 4 states apart, 2-way conflicts instead of 4-way (cuda_scan.md v18).
      const int slot = e / per_row, n = 4 * (e - slot * per_row), tt = Tl::position(slot);
      if (t0 + tt >= t_end) continue;
      const float* src = tile + n * Tl::float_row + slot;
      const float4 v = make_float4(src[0], src[Tl::float_row], src[2 * Tl::float_row], src[3 * Tl::float_row]);
      float* at = dst + int64_t(t0 + tt) * N + n;
#if __CUDA_ARCH__ >= 900
      atomicAdd(reinterpret_cast<float4*>(at), v);
#else
      atomicAdd(at, v.x), atomicAdd(at + 1, v.y), atomicAdd(at + 2, v.z), atomicAdd(at + 3, v.w);
#endif
    }
    return;
  }
  const int total = Tl::len * N, step_t = kThreads / N, step_n = kThreads % N;
  int tt = threadIdx.x / N, n = threadIdx.x % N;
  for (int e = threadIdx.x; e < total; e += kThreads) {
    if (t0 + tt < t_end) atomicAdd(dst + int64_t(t0 + tt) * N + n, tile[n * Tl::float_row + Tl::slot(tt)]);
    tt += step_t;
    n += step_n;
    if (n >= N) {
      n -= N;
      ++tt;
    }
  }
}

// Two blocks per SM (128 registers a thread): the shared memory above fits twice.
// kFixedN > 0: N is a compile-time constant, so the index arithmetic folds (the state loop stays
// rolled: two states at once would not fit in 128 registers).
template <typename T, int kItems, int kFixedN>
__global__ void __launch_bounds__(kThreads, 2) scan_backward_kernel(ScanArgs p) {
  using Tl = Tile<kItems>;
  constexpr int kQuadsPerRow = Tl::len / 4;
  const int N = kFixedN > 0 ? kFixedN : p.nstate, dim = p.dim, L = p.L;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c0 = blockIdx.x * kWarps, b = blockIdx.y;
  const int c = c0 + warp;
  const bool active = c < dim;
  const int active_warps = min(kWarps, dim - c0);

  extern __shared__ float4 smem_vec[];
  float* A2 = reinterpret_cast<float*>(smem_vec);  // [kWarps][N]
  float* g_carry = A2 + kWarps * N;                // dL/dh at the end of the current chunk
  float* h_start = g_carry + kWarps * N;           // h before the current chunk
  float* dA_acc = h_start + kWarps * N;
  float* B_tile = dA_acc + kWarps * N;  // [N][float_row] each, interleaved (Tile::slot)
  float* C_tile = B_tile + N * Tl::float_row;
  float* partial = C_tile + N * Tl::float_row;  // [2 parity][2 (B, C)][kWarps][len], interleaved
  T* delta_tile = reinterpret_cast<T*>(partial + 4 * kWarps * Tl::len);
  T* u_tile = delta_tile + kWarps * Tl::raw_row;
  T* z_tile = u_tile + kWarps * Tl::raw_row;
  T* dout_tile = z_tile + kWarps * Tl::raw_row;

  const int len = valid_length(p, b);
  for (int e = threadIdx.x; e < kWarps * N; e += kThreads) {
    const int ch = c0 + e / N, n = e % N;
    A2[e] = scaled_A(p, ch, n, N);
    g_carry[e] = ch < dim && p.dlast_state ? p.dlast_state[(int64_t(b) * dim + ch) * N + n] : 0.0f;
    dA_acc[e] = 0.0f;
  }
  const int64_t seq = int64_t(b) * L;
  const T* u = static_cast<const T*>(p.u) + seq * dim;
  const T* delta = static_cast<const T*>(p.delta) + seq * dim;
  const T* z = p.z ? static_cast<const T*>(p.z) + seq * dim : nullptr;
  const T* dout = static_cast<const T*>(p.dout) + seq * dim;
  const T* Bg = static_cast<const T*>(p.B) + seq * N;
  const T* Cg = static_cast<const T*>(p.C) + seq * N;
  const float D_c = active && p.D ? p.D[c] : 0.0f;
  const float bias = active && p.delta_bias ? p.delta_bias[c] : 0.0f;
  const int chunks = (L + Tl::len - 1) / Tl::len;
  float dD_sum = 0.0f, dbias_sum = 0.0f;
  int parity = 0;

  for (int chunk = chunks - 1; chunk >= 0; --chunk) {
    const int t0 = chunk * Tl::len;
    __syncthreads();
    {
      const float* src = p.chunk_states + (int64_t(b) * chunks + chunk) * dim * N;
      for (int e = threadIdx.x; e < kWarps * N; e += kThreads)
        h_start[e] = c0 + e / N < dim ? src[int64_t(c0) * N + e] : 0.0f;
    }
    load_channel_tile<T, kItems>(delta_tile, delta, t0, L, c0, dim, p.vector_channels);
    load_channel_tile<T, kItems>(u_tile, u, t0, L, c0, dim, p.vector_channels);
    load_channel_tile<T, kItems>(dout_tile, dout, t0, L, c0, dim, p.vector_channels);
    if (z) load_channel_tile<T, kItems>(z_tile, z, t0, L, c0, dim, p.vector_channels);
    load_state_tile<T, kItems>(B_tile, Bg, t0, L, N, p.vector_states);
    load_state_tile<T, kItems>(C_tile, Cg, t0, L, N, p.vector_states);
    __syncthreads();

    const int item0 = lane * kItems;
    // Live across the state loop (the rest is re-read from the tiles at the chunk's end, to stay
    // within 128 registers): dl: δ'; du: δ'·u; dy: dL/dy; y: pre-gate output (for dz);
    // d_delta: Σₙ g·h_prev·a·A; gB_sum: Σₙ g·B (so dδ' = d_delta + u·gB_sum).
    float dl[kItems], du[kItems], dy[kItems], y[kItems], d_delta[kItems], gB_sum[kItems];
    float lane_delta = 0.0f;  // Σ δ' over the lane's items: its decay product is exp2(A2·Σδ')
    if (active) {
      float uu[kItems], dout_v[kItems], zz[kItems];
      load_items<T, kItems>(delta_tile + warp * Tl::raw_row + item0, dl);
      load_items<T, kItems>(u_tile + warp * Tl::raw_row + item0, uu);
      load_items<T, kItems>(dout_tile + warp * Tl::raw_row + item0, dout_v);
      if (z) load_items<T, kItems>(z_tile + warp * Tl::raw_row + item0, zz);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const bool valid = t0 + item0 + i < len;
        const float x = dl[i] + bias;
        dl[i] = valid ? (p.softplus ? softplus(x) : x) : 0.0f;
        du[i] = dl[i] * uu[i];
        const float dout_i = valid ? dout_v[i] : 0.0f;
        dy[i] = z ? dout_i * zz[i] * sigmoid(zz[i]) : dout_i;
        y[i] = D_c * uu[i];
        d_delta[i] = 0.0f;
        gB_sum[i] = 0.0f;
        lane_delta += dl[i];
      }
    }
    for (int n = 0; n < N; ++n, parity ^= 1) {
      float* part_B = partial + (parity * 2) * kWarps * Tl::len;
      float* part_C = part_B + kWarps * Tl::len;
      if (active) {
        const float a2 = A2[warp * N + n], a_nat = a2 * kLn2;
        float Bv[kItems], Cv[kItems], a[kItems], h_prev[kItems], pB[kItems], pC[kItems];
        load_lane_items<kItems>(B_tile + n * Tl::float_row, lane, Bv);
        load_lane_items<kItems>(C_tile + n * Tl::float_row, lane, Cv);
#pragma unroll
        for (int i = 0; i < kItems; ++i) a[i] = exp2f(dl[i] * a2);
        const float lane_decay = exp2f(lane_delta * a2);
        // Forward: states inside the chunk from the stored start state.
        float pa = lane_decay, pb = du[0] * Bv[0];
#pragma unroll
        for (int i = 1; i < kItems; ++i) pb = fmaf(a[i], pb, du[i] * Bv[i]);
        scan_pairs_forward(pa, pb, lane);
        float ea = __shfl_up_sync(0xffffffffu, pa, 1), eb = __shfl_up_sync(0xffffffffu, pb, 1);
        if (lane == 0) ea = 1.0f, eb = 0.0f;
        float h = fmaf(ea, h_start[warp * N + n], eb);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          h_prev[i] = h;
          h = fmaf(a[i], h, du[i] * Bv[i]);
          y[i] = fmaf(Cv[i], h, y[i]);
          pC[i] = dy[i] * h;
        }
        store_lane_items<kItems>(part_C + warp * Tl::len, lane, pC);
        // Reverse: f = dL/dh from the future; f_{t−1} = a_t·(f_t + C_t·dy_t).
        float ra = lane_decay, rb = 0.0f;
#pragma unroll
        for (int i = kItems - 1; i >= 0; --i) rb = a[i] * fmaf(Cv[i], dy[i], rb);
        scan_pairs_reverse(ra, rb, lane);
        float na = __shfl_down_sync(0xffffffffu, ra, 1), nb = __shfl_down_sync(0xffffffffu, rb, 1);
        if (lane == 31) na = 1.0f, nb = 0.0f;
        const float g_end = g_carry[warp * N + n];
        float f = fmaf(na, g_end, nb);
        float dA_lane = 0.0f;
        // B is read again rather than kept: the registers it would hold are needed meanwhile.
        load_lane_items<kItems>(B_tile + n * Tl::float_row, lane, Bv);
#pragma unroll
        for (int i = kItems - 1; i >= 0; --i) {
          const float g = fmaf(Cv[i], dy[i], f);
          const float decay_grad = g * h_prev[i] * a[i];     // dL/d(δ'·A)
          d_delta[i] = fmaf(decay_grad, a_nat, d_delta[i]);  // the Σ g·B·u part is added once below
          gB_sum[i] = fmaf(g, Bv[i], gB_sum[i]);
          pB[i] = g * du[i];
          dA_lane = fmaf(decay_grad, dl[i], dA_lane);
          f = a[i] * g;
        }
        store_lane_items<kItems>(part_B + warp * Tl::len, lane, pB);
        dA_lane = warp_sum(dA_lane);
        __syncwarp();
        if (lane == 0) {
          g_carry[warp * N + n] = fmaf(ra, g_end, rb);
          dA_acc[warp * N + n] += dA_lane;
        }
      }
      // Every warp is past its reads of row n of the B and C tiles and has written its partials:
      // the channel sums replace row n. The other parity's buffers take state n + 1 meanwhile.
      // Each thread of one half of the block (whole warps, the halves taking turns by parity) sums
      // 4 consecutive slots over the warps with 16-byte reads; the other half goes on.
      __syncthreads();
      static_assert(2 * kQuadsPerRow * 2 == kThreads, "half the block covers the B and C rows in quads");
      if (threadIdx.x / (2 * kQuadsPerRow) == parity) {
        const int q = threadIdx.x % (2 * kQuadsPerRow), which = q / kQuadsPerRow, s = 4 * (q % kQuadsPerRow);
        const float* src = (which ? part_C : part_B) + s;
        float4 sum = *reinterpret_cast<const float4*>(src);  // warp 0 always holds a channel
#pragma unroll
        for (int w = 1; w < kWarps; ++w) {
          if (w >= active_warps) break;  // warps past the last channel write no partials
          const float4 v = *reinterpret_cast<const float4*>(src + w * Tl::len);
          sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
        }
        *reinterpret_cast<float4*>((which ? C_tile : B_tile) + n * Tl::float_row + s) = sum;
      }
    }
    if (active) {
      float dd[kItems], uu[kItems], out_delta[kItems], out_u[kItems];
      load_items<T, kItems>(delta_tile + warp * Tl::raw_row + item0, dd);
      load_items<T, kItems>(u_tile + warp * Tl::raw_row + item0, uu);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const bool valid = t0 + item0 + i < len;
        const float x = dd[i] + bias;
        const float dsoftplus = p.softplus && x <= 20.0f ? sigmoid(x) : 1.0f;  // dδ'/dδ
        out_delta[i] = valid ? fmaf(gB_sum[i], uu[i], d_delta[i]) * dsoftplus : 0.0f;
        out_u[i] = valid ? fmaf(gB_sum[i], dl[i], dy[i] * D_c) : 0.0f;
        dD_sum = fmaf(dy[i], uu[i], dD_sum);
        dbias_sum += out_delta[i];
      }
      if (z) {
        // d out/dz = y·σ(z)·(1 + z·(1 − σ(z)))
        float zz[kItems], dout_v[kItems], out_z[kItems];
        load_items<T, kItems>(z_tile + warp * Tl::raw_row + item0, zz);
        load_items<T, kItems>(dout_tile + warp * Tl::raw_row + item0, dout_v);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          const float s = sigmoid(zz[i]);
          out_z[i] = t0 + item0 + i < len ? dout_v[i] * y[i] * s * fmaf(zz[i], 1.0f - s, 1.0f) : 0.0f;
        }
        store_items<T, kItems>(z_tile + warp * Tl::raw_row + item0, out_z);
      }
      store_items<T, kItems>(delta_tile + warp * Tl::raw_row + item0, out_delta);
      store_items<T, kItems>(u_tile + warp * Tl::raw_row + item0, out_u);
    }
    __syncthreads();
    const int t_end = min(L, t0 + Tl::len);
    store_channel_tile<T, kItems>(static_cast<T*>(p.ddelta) + seq * dim, delta_tile, t0, t_end, c0, dim,
                                  p.vector_channels);
    store_channel_tile<T, kItems>(static_cast<T*>(p.du) + seq * dim, u_tile, t0, t_end, c0, dim, p.vector_channels);
    if (z)
      store_channel_tile<T, kItems>(static_cast<T*>(p.dz) + seq * dim, z_tile, t0, t_end, c0, dim, p.vector_channels);
    add_state_tile<kItems>(p.dB + seq * N, B_tile, t0, t_end, N, p.vector_state_grads);
    add_state_tile<kItems>(p.dC + seq * N, C_tile, t0, t_end, N, p.vector_state_grads);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kWarps * N; e += kThreads) {
    const int ch = c0 + e / N, n = e % N;
    if (ch >= dim) continue;
    if (p.dinitial_state) p.dinitial_state[(int64_t(b) * dim + ch) * N + n] = g_carry[e];
    atomicAdd(p.dA + ch * N + n, dA_acc[e]);
  }
  dD_sum = warp_sum(dD_sum);
  dbias_sum = warp_sum(dbias_sum);
  if (active && lane == 0) {
    if (p.dD) atomicAdd(p.dD + c, dD_sum);
    if (p.ddelta_bias) atomicAdd(p.ddelta_bias + c, dbias_sum);
  }
}

// The decode step runs a group of kLanes threads per (sequence, channel): the lanes share the
// folded delta projection (lane g reads 16-byte pieces g, g + kLanes, … of the weight row, so a
// group reads its row in contiguous runs) and the states (n = g, g + kLanes, …), and sum over the
// group by shuffles. With one thread per channel, the 1.4b step (D = 4096) ran on 32 blocks that
// pulled all of W_dt through 32 SMs and was slower than the separate product.
template <int kLanes>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Before the kernel waits for the one that wrote its inputs, each lane loads what no kernel of the
// step writes: the first kPrefetchedStates of its states (the channel's state was last written by
// the previous step's update) with their A, and the first kPrefetchedRanks 16-byte pieces of its
// part of the W_δ row. The rest (N > 4·kLanes, larger ranks) is read after the wait; the rest of the
// W_δ row is fetched into L2 before it.
constexpr int kPrefetchedStates = 4;
constexpr int kPrefetchedRanks = 2;

// Weight is the dtype of delta_proj when given (else unused).
template <typename T, typename Weight, int kLanes>
__global__ void state_update_kernel(ScanArgs p, float* state) {
  constexpr int kVec = 16 / int(sizeof(Weight));
  const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, rows = int64_t(p.batch) * p.dim;
  const int lane = int(thread % kLanes);
  // Groups past the last row stay for the shuffles: they read the last row and write nothing.
  const bool active = thread / kLanes < rows;
  const int64_t index = active ? thread / kLanes : rows - 1;
  const int N = p.nstate, c = int(index % p.dim), rank = p.delta_rank;
  const int64_t b = index / p.dim;
  float* h = state + index * N;
  float h_prev[kPrefetchedStates], a[kPrefetchedStates];
#pragma unroll
  for (int j = 0; j < kPrefetchedStates; ++j) {
    const int n = lane + j * kLanes;
    h_prev[j] = n < N ? h[n] : 0.0f;
    a[j] = n < N ? p.A[c * N + n] : 0.0f;
  }
  const Weight* w_row = static_cast<const Weight*>(p.delta_proj) + int64_t(c) * rank;
  float w_first[kPrefetchedRanks][kVec];
  if (p.vector_delta_proj)
#pragma unroll
    for (int j = 0; j < kPrefetchedRanks; ++j) {
      const int r = (lane + j * kLanes) * kVec;
      if (r < rank) load_items<Weight, kVec>(w_row + r, w_first[j]);
    }
  const char* w_bytes = reinterpret_cast<const char*>(w_row);
  if (p.vector_delta_proj)
    for (int offset = (lane + kPrefetchedRanks * kLanes) * 16; offset < rank * int(sizeof(Weight));
         offset += kLanes * 16)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(w_bytes + offset));
  const float delta_bias = p.delta_bias ? p.delta_bias[c] : 0.0f, skip = p.D ? p.D[c] : 0.0f;
  wait_for_previous_kernels();
  allow_next_kernel_launch();
  // The inputs the update needs besides δ, loaded before δ's dot product so that their round trip
  // overlaps its loads instead of following it.
  const float u = to_float(static_cast<const T*>(p.u)[index]);
  const float zv = p.z ? to_float(static_cast<const T*>(p.z)[index]) : 0.0f;
  const T* B = static_cast<const T*>(p.B) + b * p.state_row_stride;
  const T* C = static_cast<const T*>(p.C) + b * p.state_row_stride;
  float B_first[kPrefetchedStates], C_first[kPrefetchedStates];
#pragma unroll
  for (int j = 0; j < kPrefetchedStates; ++j) {
    const int n = lane + j * kLanes;
    B_first[j] = n < N ? to_float(B[n]) : 0.0f;
    C_first[j] = n < N ? to_float(C[n]) : 0.0f;
  }

  float delta = 0.0f;
  if (!p.delta_proj) {
    delta = to_float(static_cast<const T*>(p.delta)[index]);
  } else {
    // δ = delta_proj row c · the sequence's low-rank delta row, summed over the group.
    const T* low = static_cast<const T*>(p.delta) + b * p.delta_row_stride;
    float sum = 0.0f;
    if (p.vector_delta_proj) {
#pragma unroll
      for (int j = 0; j < kPrefetchedRanks; ++j) {
        const int r = (lane + j * kLanes) * kVec;
        if (r >= rank) break;
        float x[kVec];
        load_items<T, kVec>(low + r, x);
#pragma unroll
        for (int i = 0; i < kVec; ++i) sum = fmaf(x[i], w_first[j][i], sum);
      }
      for (int r = (lane + kPrefetchedRanks * kLanes) * kVec; r < rank; r += kLanes * kVec) {
        float x[kVec], weights[kVec];
        load_items<T, kVec>(low + r, x);
        load_items<Weight, kVec>(w_row + r, weights);
#pragma unroll
        for (int i = 0; i < kVec; ++i) sum = fmaf(x[i], weights[i], sum);
      }
    } else {
      for (int r = lane; r < rank; r += kLanes) sum = fmaf(to_float(low[r]), to_float(w_row[r]), sum);
    }
    delta = group_sum<kLanes>(sum);
  }
  const float x = delta + delta_bias;
  const float dl = p.softplus ? softplus(x) : x;
  float y = 0.0f;
#pragma unroll
  for (int j = 0; j < kPrefetchedStates; ++j) {
    const int n = lane + j * kLanes;
    if (n >= N) break;
    const float next = fmaf(exp2f(dl * a[j] * kLog2e), h_prev[j], dl * B_first[j] * u);
    if (active) h[n] = next;
    y = fmaf(C_first[j], next, y);
  }
  for (int n = lane + kPrefetchedStates * kLanes; n < N; n += kLanes) {
    const float next = fmaf(exp2f(dl * p.A[c * N + n] * kLog2e), h[n], dl * to_float(B[n]) * u);
    if (active) h[n] = next;
    y = fmaf(to_float(C[n]), next, y);
  }
  y = group_sum<kLanes>(y);
  if (!active || lane != 0) return;
  if (p.D) y = fmaf(skip, u, y);
  if (p.z) y *= zv * sigmoid(zv);
  static_cast<T*>(p.out)[index] = from_float<T>(y);
}

template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, int N) {
  int device = 0, limit = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
  MAMBA_CHECK(bytes <= size_t(limit), "selective_scan (cuda): state size N = ", N, " needs ", bytes,
              " bytes of shared memory per block, more than the GPU's ", limit);
  if (bytes > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
               "cudaFuncSetAttribute");
}

void check_same(const Tensor& t, const char* name, const Tensor& u, const Shape& shape) {
  require_cuda_tensor(t, name);
  check_shape(t, shape, name);
  check_dtype(t, u.dtype(), name);
}

void check_f32(const Tensor& t, const char* name, const Shape& shape) {
  require_cuda_tensor(t, name);
  check_shape(t, shape, name);
  check_dtype(t, DType::f32, name);
}

// Checks device, dtype and shape of every given tensor; `step` inputs have no length axis. A
// defined `delta_B_C` (the step with delta_proj) stands for in.delta, in.B and in.C: [batch,
// R + 2N], the three side by side.
ScanArgs prepare(const ScanInputs& in, bool step, const Tensor& delta_B_C = {}) {
  require_cuda_tensor(in.u, "selective_scan u");
  const DType dtype = in.u.dtype();
  MAMBA_CHECK(dtype == DType::f32 || dtype == DType::bf16, "selective_scan (cuda): u must be f32 or bf16, got ",
              dtype_name(dtype));
  MAMBA_CHECK(in.u.ndim() == (step ? 2 : 3), "selective_scan u: expected ", step ? "[batch, D]" : "[batch, L, D]",
              ", got ", shape_string(in.u.shape()));
  require_cuda_tensor(in.A, "selective_scan A");
  MAMBA_CHECK(in.A.ndim() == 2, "selective_scan A: expected [D, N], got ", shape_string(in.A.shape()));
  ScanArgs p;
  p.batch = int(in.u.size(0));
  p.L = step ? 1 : int(in.u.size(1));
  p.dim = int(in.u.size(-1));
  p.nstate = int(in.A.size(1));
  MAMBA_CHECK(p.nstate > 0, "selective_scan A: state size N must be positive");
  p.state_stride = int(scan_state_stride(dtype, p.nstate));
  const Shape rows = step ? Shape{p.batch, p.dim} : Shape{p.batch, p.L, p.dim};
  const Shape state_rows = step ? Shape{p.batch, p.nstate} : Shape{p.batch, p.L, p.nstate};
  check_f32(in.A, "selective_scan A", {p.dim, p.nstate});
  MAMBA_CHECK(step || !in.delta_proj.defined(), "selective_scan delta_proj: for the decode step only");
  MAMBA_CHECK(!delta_B_C.defined() || (step && in.delta_proj.defined()),
              "selective_scan delta_B_C: for the decode step with delta_proj");
  p.state_row_stride = p.nstate;
  if (delta_B_C.defined()) {
    // δ's low-rank rows, B and C side by side: the rank comes from delta_proj.
    MAMBA_CHECK(in.delta_proj.ndim() == 2 && in.delta_proj.size(1) >= 1,
                "selective_scan delta_proj: expected [D, R], got ", shape_string(in.delta_proj.shape()));
    p.delta_rank = int(in.delta_proj.size(1));
    const int64_t width = p.delta_rank + 2 * int64_t(p.nstate);
    check_same(delta_B_C, "selective_scan delta_B_C", in.u, {p.batch, width});
    p.delta_row_stride = p.state_row_stride = width;
    const auto* first = static_cast<const char*>(delta_B_C.raw());
    const size_t element = dtype_size(dtype);
    p.delta = first;
    p.B = first + size_t(p.delta_rank) * element;
    p.C = first + size_t(p.delta_rank + p.nstate) * element;
  } else {
    if (step && in.delta_proj.defined()) {
      require_cuda_tensor(in.delta, "selective_scan delta");
      MAMBA_CHECK(in.delta.ndim() == 2 && in.delta.size(1) >= 1,
                  "selective_scan delta: with delta_proj, expected [batch, R], got ", shape_string(in.delta.shape()));
      p.delta_rank = int(in.delta.size(1));
      p.delta_row_stride = p.delta_rank;
      check_same(in.delta, "selective_scan delta", in.u, {p.batch, p.delta_rank});
    } else {
      check_same(in.delta, "selective_scan delta", in.u, rows);
    }
    check_same(in.B, "selective_scan B", in.u, state_rows);
    check_same(in.C, "selective_scan C", in.u, state_rows);
    p.delta = in.delta.raw();
    p.B = in.B.raw();
    p.C = in.C.raw();
  }
  if (step && in.delta_proj.defined()) {
    require_cuda_tensor(in.delta_proj, "selective_scan delta_proj");
    check_shape(in.delta_proj, {p.dim, p.delta_rank}, "selective_scan delta_proj");
  }
  if (in.z.defined()) check_same(in.z, "selective_scan z", in.u, rows);
  if (in.D.defined()) check_f32(in.D, "selective_scan D", {p.dim});
  if (in.delta_bias.defined()) check_f32(in.delta_bias, "selective_scan delta_bias", {p.dim});
  if (!step && in.initial_state.defined())
    check_f32(in.initial_state, "selective_scan initial_state", {p.batch, p.dim, p.nstate});
  if (!step && in.lengths.defined()) {
    require_cuda_tensor(in.lengths, "selective_scan lengths");
    check_shape(in.lengths, {p.batch}, "selective_scan lengths");
    check_dtype(in.lengths, DType::i32, "selective_scan lengths");
  }
  p.u = in.u.raw();
  p.z = in.z.defined() ? in.z.raw() : nullptr;
  p.A = in.A.data<float>();
  p.D = data_or_null<float>(in.D);
  p.delta_bias = data_or_null<float>(in.delta_bias);
  p.softplus = in.delta_softplus;
  if (!step) {
    p.initial_state = data_or_null<float>(in.initial_state);
    p.lengths = data_or_null<int32_t>(in.lengths);
  }
  return p;
}

// Splitting the length across blocks adds a summary pass (0.55 of an output pass under ncu) but
// fills idle SMs. Cost model: waves of resident blocks × positions per block × (1 or 1.55); the
// smallest split count of least cost wins. Each split covers whole chunks, at least four of them.
struct SplitPlan {
  int splits = 1, split_len = 0;
};

SplitPlan plan_splits(const ScanArgs& p, int chunk_len, int resident_blocks) {
  const int64_t blocks = int64_t(p.batch) * ((p.dim + kWarps - 1) / kWarps);
  const int64_t chunks = (p.L + chunk_len - 1) / chunk_len;
  const int64_t resident = std::max(1, resident_blocks);
  int64_t best_splits = 1;
  double best_cost = 0;
  for (int64_t splits = 1; splits <= std::max<int64_t>(1, std::min<int64_t>(64, chunks / 4)); ++splits) {
    const int64_t per_split = (chunks + splits - 1) / splits;
    const int64_t waves = (blocks * splits + resident - 1) / resident;
    const double cost = double(waves) * double(per_split) * (splits > 1 ? 1.55 : 1.0);
    if (splits == 1 || cost < best_cost * 0.97) best_cost = cost, best_splits = splits;
  }
  const int64_t chunks_per_split = std::max<int64_t>(1, (chunks + best_splits - 1) / best_splits);
  SplitPlan plan;
  plan.split_len = int(chunks_per_split * chunk_len);
  plan.splits = int(std::max<int64_t>(1, (chunks + chunks_per_split - 1) / chunks_per_split));
  return plan;
}

// Splits for scan_group_kernel. Its warps are taken to run at full speed until an SM holds
// kGroupSaturatingWarps of them, and a split length costs a summary pass of about kGroupSummaryCost
// of an output pass. Time model: (1, or 1 + that cost when split) × warps per SM × positions per
// split / min(warps per SM, kGroupSaturatingWarps); the fewest splits within 3% of the least time
// win. Splits cover whole 256-position chunks.
constexpr int kGroupSaturatingWarps = 16;
constexpr double kGroupSummaryCost = 0.6;

// `splits` (1 to one per unit) as even runs of whole units; fewer when rounding leaves the last empty.
SplitPlan even_splits(int64_t units, int unit_len, int64_t splits) {
  splits = std::clamp<int64_t>(splits, 1, std::max<int64_t>(units, 1));
  const int64_t per_split = (units + splits - 1) / splits;
  return {int((units + per_split - 1) / per_split), int(per_split * unit_len)};
}

// The fewest splits of `units` runs of unit_len positions (at most max_splits) whose
// cost(splits used, units per split) is within 3% of the least.
template <typename Cost>
SplitPlan fewest_splits(int64_t units, int unit_len, int64_t max_splits, Cost cost) {
  SplitPlan plan{1, int(units * unit_len)};
  double best_cost = 0;
  for (int64_t splits = 1; splits <= std::min(units, max_splits); ++splits) {
    const SplitPlan candidate = even_splits(units, unit_len, splits);
    const double c = cost(candidate.splits, candidate.split_len / unit_len);
    if (splits == 1 || c < best_cost * 0.97) best_cost = c, plan = candidate;
  }
  return plan;
}

// Split counts set by set_selective_scan_splits (0: planned).
int forced_forward_splits = 0, forced_backward_splits = 0;

SplitPlan plan_group_splits(const ScanArgs& p) {
  const int64_t warps = int64_t(p.batch) * ((p.dim + kGroupChannels - 1) / kGroupChannels) * kGroupWarps;
  const int64_t sms = multiprocessor_count();
  const int64_t chunks = (p.L + kLaneStateChunk - 1) / kLaneStateChunk;
  if (forced_forward_splits > 0) return even_splits(chunks, kLaneStateChunk, forced_forward_splits);
  return fewest_splits(chunks, kLaneStateChunk, 256, [&](int64_t used, int64_t per_split) {
    const int64_t per_sm = (warps * used + sms - 1) / sms;
    return (used > 1 ? 1 + kGroupSummaryCost : 1.0) * double(per_sm) * double(per_split) /
           double(std::min<int64_t>(per_sm, kGroupSaturatingWarps));
  });
}

// Splits for scan_group_backward_kernel (kGroupBackBlocksPerSM blocks per SM). Time model: waves of
// blocks × positions per split, the summaries (splits after the first) adding about
// kGroupBackSummaryCost of that; the fewest splits within 3% of the least time win. Splits cover
// whole tiles. The cost 0.5 fits a sweep of forced split counts (docs/perf/cuda_scan.md, v22) at
// all four TARGETS.md shapes; 0.25 split (4, 4096, 2048) in 16 where one split was 7% faster.
constexpr int kGroupBackBlocksPerSM = 3;
constexpr double kGroupBackSummaryCost = 0.5;

SplitPlan plan_group_backward_splits(const ScanArgs& p) {
  const int64_t blocks = int64_t(p.batch) * ((p.dim + kGroupChannels - 1) / kGroupChannels);
  const int64_t slots = kGroupBackBlocksPerSM * multiprocessor_count();
  const int64_t tiles = (p.L + kGroupBackTile - 1) / kGroupBackTile;
  if (forced_backward_splits > 0) return even_splits(tiles, kGroupBackTile, forced_backward_splits);
  return fewest_splits(tiles, kGroupBackTile, 64, [&](int64_t used, int64_t per_split) {
    const int64_t waves = (blocks * used + slots - 1) / slots;
    return (used > 1 ? 1 + kGroupBackSummaryCost : 1.0) * double(waves) * double(per_split);
  });
}

// Blocks of the output kernel that fit on the GPU at once.
template <typename T, int kItems, int kFixedN, int kMinBlocks>
int resident_blocks(int N) {
  int per_sm = 0;
  const size_t bytes = forward_smem_bytes<kItems>(N, sizeof(T));
  auto kernel = scan_forward_kernel<T, kItems, kFixedN, kMinBlocks>;
  allow_shared_memory(kernel, bytes, N);
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, bytes), "occupancy query");
  return per_sm * multiprocessor_count();
}

// Σδ', end states from zero, incoming states: [batch, splits, D] and twice [batch, splits, D, N].
size_t split_scratch_floats(const ScanArgs& p, const SplitPlan& plan) {
  return plan.splits > 1 ? size_t(p.batch) * plan.splits * p.dim * (1 + 2 * size_t(p.nstate)) : 0;
}

// Device scratch for one call, from the block cache (no cudaMalloc or cudaFree per call). A block
// per call, not one buffer grown for the process: a recorded CUDA graph keeps the blocks it used,
// where a shared buffer grown by a later call would leave the graph writing freed memory.
Tensor scratch(size_t floats) { return Tensor::empty({int64_t(floats)}, DType::f32, Device::cuda); }

// The incoming state of every split (p.split_init, which may be p.split_state itself) from the
// summary and chain kernels.
template <typename T>
void run_split_states(const ScanArgs& p) {
  const size_t bytes = summary_smem_bytes<T>(p.nstate, sizeof(T));
  auto kernel = p.nstate == 16 ? scan_summary_kernel<T, 16> : scan_summary_kernel<T, 0>;
  allow_shared_memory(kernel, bytes, p.nstate);
  kernel<<<dim3(p.splits, p.batch, (p.dim + kWarps - 1) / kWarps), kThreads, bytes>>>(p);
  check_launch("selective_scan summary kernel");
  chain_splits_kernel<<<blocks_for(int64_t(p.batch) * p.dim * p.nstate, 256), 256>>>(p);
  check_launch("selective_scan chain kernel");
}

__global__ void narrow_pairs_kernel(const float* a, const float* b, __nv_bfloat16* a_out, __nv_bfloat16* b_out,
                                    int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    a_out[i] = __float2bfloat16_rn(a[i]);
    b_out[i] = __float2bfloat16_rn(b[i]);
  }
}

// Vector tile moves need whole 16-byte vectors per row and 16-byte aligned tensors.
void set_vector_flags(ScanArgs& p, size_t elem) {
  const int vec = int(16 / elem);
  p.vector_channels = p.dim % vec == 0;
  for (const void* ptr : std::initializer_list<const void*>{p.u, p.delta, p.z, p.dout, p.out, p.du, p.ddelta, p.dz})
    p.vector_channels = p.vector_channels && aligned16(ptr);
  p.vector_states = p.nstate % vec == 0 && aligned16(p.B) && aligned16(p.C);
}

// Forward kernel variant (tuning knob, see scan_launch.h): 0: run-time N, 1: 16 positions per lane,
// 2: N = 16 unrolled, 3 or 2 blocks/SM by grid size, 3: N = 16 unrolled, 2 blocks/SM, 4 (default):
// state-group kernel (N = 16).
int forward_variant = kDefaultScanForwardVariant;

// The splits' summaries and incoming states, [batch, splits, D, N] each, then their Σδ',
// [batch, splits, D], from `scratch` (16-byte aligned): the state rows first, so that with N a
// multiple of 4 every (sequence, split, channel) row of states is 16-byte aligned for vector stores.
void set_split_buffers(ScanArgs& p, float* scratch) {
  const size_t rows = size_t(p.batch) * p.splits * p.dim;
  p.split_state = scratch;
  p.split_init = scratch + rows * p.nstate;
  p.split_delta_sum = scratch + 2 * rows * p.nstate;
}

// Records the plan in p and, for a split length, points p's split buffers into a scratch block,
// returned: the caller holds it until its kernels are queued.
[[nodiscard]] Tensor use_split_plan(ScanArgs& p, const SplitPlan& plan) {
  p.splits = plan.splits;
  p.split_len = plan.split_len;
  if (p.splits == 1) return {};
  Tensor split_scratch = scratch(split_scratch_floats(p, plan));
  set_split_buffers(p, split_scratch.data<float>());
  return split_scratch;
}

// The state-group forward (N = 16); a split length first gets its splits' incoming states from the
// same kernel's summary mode and the chain kernel.
template <typename T, int kTile = kGroupTile<T>>
void run_group_forward(ScanArgs p) {
  const Tensor split_scratch = use_split_plan(p, plan_group_splits(p));
  const dim3 grid((p.dim + kGroupChannels - 1) / kGroupChannels, p.batch, p.splits);
  if (p.splits > 1) {
    // Summaries of every split but the last (only the last state would need that one, and the
    // output pass writes it); the output pass chains them into its incoming state.
    scan_group_kernel<T, true, kTile><<<dim3(grid.x, grid.y, p.splits - 1), kGroupThreads>>>(p);
    check_launch("selective_scan state-group summary kernel");
  }
  scan_group_kernel<T, false, kTile><<<grid, kGroupThreads>>>(p);
  check_launch("selective_scan state-group forward kernel");
}

// The output pass over the whole length; a split length first gets its splits' incoming states.
template <typename T, int kItems, int kFixedN, int kMinBlocks>
void run_output_pass(ScanArgs p) {
  const SplitPlan plan = plan_splits(p, Tile<kItems>::len, resident_blocks<T, kItems, kFixedN, kMinBlocks>(p.nstate));
  const Tensor split_scratch = use_split_plan(p, plan);
  if (p.splits > 1) run_split_states<T>(p);
  const size_t bytes = forward_smem_bytes<kItems>(p.nstate, sizeof(T));
  // Prefetching for bf16 only: float32 shares take twice the registers and spill.
  constexpr bool kPrefetch = kFixedN > 0 && sizeof(T) == 2;
  auto kernel = kPrefetch && p.vector_channels && p.vector_states
                    ? scan_forward_kernel<T, kItems, kFixedN, kMinBlocks, kPrefetch>
                    : scan_forward_kernel<T, kItems, kFixedN, kMinBlocks, false>;
  allow_shared_memory(kernel, bytes, p.nstate);
  kernel<<<dim3((p.dim + kWarps - 1) / kWarps, p.batch, p.splits), kThreads, bytes>>>(p);
  check_launch("selective_scan forward kernel");
}

template <typename T>
void run_output_variant(const ScanArgs& p) {
  const bool n16 = p.nstate == 16;
  // Chunk states at the state groups' stride come from their forward, whatever the variant.
  if (n16 && (forward_variant == 4 || (p.chunk_states && p.state_stride == kGroupBackTile)))
    return run_group_forward<T>(p);
  // Chunk states are written at the backward's chunks: variant 1's are twice as long.
  if (forward_variant == 1 && !p.chunk_states) return run_output_pass<T, 16, 0, 2>(p);
  if (forward_variant == 2 && n16) {
    // Fewer blocks than 4 per SM: fewer, longer-lived blocks run faster with the registers of 2
    // blocks per SM (and such grids stay unsplit there): v10, shapes (1, 4096, 8192) and
    // (1, 1536, 65536) 1% and 11% faster, (4, 4096, 2048) and (8, 1536, 2048) 9% slower.
    const int64_t blocks = int64_t(p.batch) * ((p.dim + kWarps - 1) / kWarps);
    if (blocks < 4 * int64_t(multiprocessor_count())) return run_output_pass<T, kForwardItems, 16, 2>(p);
    return run_output_pass<T, kForwardItems, 16, 3>(p);
  }
  if (forward_variant == 3 && n16) return run_output_pass<T, kForwardItems, 16, 2>(p);
  run_output_pass<T, kForwardItems, 0, 3>(p);
}

// Backward kernel variant (tuning knob, see scan_launch.h): 0: lane scans, 1 (default): state
// groups for bf16 with N = 16 (others always run 0).
int backward_variant = kDefaultScanBackwardVariant;

// Leaves p.dB / p.dC pointing at the float32 sums (scratch unless dBC_in_place); returns the
// scratch block, which the caller holds while it reads them.
template <typename T>
[[nodiscard]] Tensor run_backward(ScanArgs& p, bool dBC_in_place) {
  const bool groups = p.state_stride == kGroupBackTile && backward_variant == 1;
  // The lane scans restart every kLaneStateChunk positions: states kept at another stride are not
  // theirs, and they recompute their own.
  if (!groups && p.state_stride != kLaneStateChunk) p.chunk_states = nullptr;
  const int chunk_len = groups ? kGroupBackTile : kLaneStateChunk;
  const size_t chunks = (p.L + chunk_len - 1) / chunk_len;
  // Scratch regions start at multiples of 4 floats (16-byte atomics into dB and dC).
  auto round4 = [](size_t n) { return (n + 3) / 4 * 4; };
  // Chunk states from the forward (p.chunk_states given) need no scratch and no states pass. The
  // state groups' pass is their forward (run first: it may use the scratch for its splits).
  const bool states_pass = p.chunk_states == nullptr;
  Tensor group_states, discarded_out, discarded_last;
  if (groups && states_pass) {
    const Device gpu = Device::cuda;
    group_states = Tensor::empty({p.batch, int64_t(chunks), p.dim, p.nstate}, DType::f32, gpu);
    discarded_out = Tensor::empty({p.batch, p.L, p.dim}, DType::bf16, gpu);
    discarded_last = Tensor::empty({p.batch, p.dim, p.nstate}, DType::f32, gpu);
    ScanArgs forward = p;
    forward.out = discarded_out.raw();
    forward.last_state = discarded_last.data<float>();
    forward.chunk_states = group_states.data<float>();
    run_group_forward<T>(forward);
    p.chunk_states = forward.chunk_states;
  }
  const bool lane_states_pass = states_pass && !groups;
  const size_t states = lane_states_pass ? round4(size_t(p.batch) * chunks * p.dim * p.nstate) : 0;
  const size_t delta_sums = lane_states_pass ? round4(size_t(p.batch) * chunks * p.dim) : 0;
  const size_t bc = dBC_in_place ? 0 : round4(size_t(p.batch) * p.L * p.nstate);
  const SplitPlan plan = groups ? plan_group_backward_splits(p) : SplitPlan{1, p.L};
  const size_t split_floats = split_scratch_floats(p, plan);
  const Tensor scratch_block = scratch(states + delta_sums + 2 * bc + split_floats);
  float* buffer = scratch_block.data<float>();
  p.splits = plan.splits;
  p.split_len = plan.split_len;
  if (plan.splits > 1) set_split_buffers(p, buffer + states + delta_sums + 2 * bc);
  if (lane_states_pass) p.chunk_states = buffer;
  if (!dBC_in_place) {
    p.dB = buffer + states + delta_sums;
    p.dC = p.dB + bc;
  }
  p.vector_state_grads = p.nstate % 4 == 0 && aligned16(p.dB) && aligned16(p.dC);
  // The sums are atomics' targets. In scratch they lie back to back: one memset (a graph node and
  // its launch gap fewer per layer).
  const size_t bc_bytes = size_t(p.batch) * p.L * p.nstate * sizeof(float);
  if (dBC_in_place) {
    check_cuda(cudaMemsetAsync(p.dB, 0, bc_bytes), "cudaMemsetAsync");
    check_cuda(cudaMemsetAsync(p.dC, 0, bc_bytes), "cudaMemsetAsync");
  } else {
    check_cuda(cudaMemsetAsync(p.dB, 0, bc * sizeof(float) + bc_bytes), "cudaMemsetAsync");
  }
  if (groups) {
    constexpr size_t bytes = sizeof(GroupBackShared);
    const dim3 grid((p.dim + kGroupChannels - 1) / kGroupChannels, p.batch, p.splits);
    if (p.splits > 1) {
      allow_shared_memory(scan_group_backward_kernel<true>, bytes, p.nstate);
      scan_group_backward_kernel<true><<<dim3(grid.x, grid.y, p.splits - 1), kGroupThreads, bytes>>>(p);
      check_launch("selective_scan state-group backward summary kernel");
      chain_splits_reverse_kernel<<<blocks_for(int64_t(p.batch) * p.dim * p.nstate, 256), 256>>>(p);
      check_launch("selective_scan backward chain kernel");
    }
    allow_shared_memory(scan_group_backward_kernel<false>, bytes, p.nstate);
    scan_group_backward_kernel<false><<<grid, kGroupThreads, bytes>>>(p);
    check_launch("selective_scan state-group backward kernel");
    return scratch_block;
  }
  if (lane_states_pass) {
    // Every chunk is a split; its end state from zero is chained, in place, into the state before it.
    ScanArgs every_chunk = p;
    every_chunk.splits = int(chunks);
    every_chunk.split_len = chunk_len;
    every_chunk.split_state = every_chunk.split_init = p.chunk_states;
    every_chunk.split_delta_sum = buffer + states;
    run_split_states<T>(every_chunk);
  }
  const size_t bytes = backward_smem_bytes<kBackwardItems>(p.nstate, sizeof(T));
  auto kernel =
      p.nstate == 16 ? scan_backward_kernel<T, kBackwardItems, 16> : scan_backward_kernel<T, kBackwardItems, 0>;
  allow_shared_memory(kernel, bytes, p.nstate);
  kernel<<<dim3((p.dim + kWarps - 1) / kWarps, p.batch), kThreads, bytes>>>(p);
  check_launch("selective_scan backward kernel");
  return scratch_block;
}

// ScanOutputs::chunk_states (ops/selective_scan.h).
Shape chunk_states_shape(const ScanArgs& p) {
  return {p.batch, (p.L + p.state_stride - 1) / p.state_stride, p.dim, p.nstate};
}

// Zeros the defined tensors, one memset per run of them that lie back to back in one buffer (the
// backward's own float32 sums are allocated that way; a memset may not cross allocations).
void zero_async(std::initializer_list<const Tensor*> tensors) {
  const Tensor* run_first = nullptr;
  char* run_begin = nullptr;
  size_t run_bytes = 0;
  for (const Tensor* t : tensors) {
    if (!t->defined() || t->nbytes() == 0) continue;
    char* begin = static_cast<char*>(t->raw());
    if (run_first && run_first->shares_buffer(*t) && run_begin + run_bytes == begin) {
      run_bytes += t->nbytes();
      continue;
    }
    if (run_first) check_cuda(cudaMemsetAsync(run_begin, 0, run_bytes), "cudaMemsetAsync");
    run_first = t;
    run_begin = begin;
    run_bytes = t->nbytes();
  }
  if (run_first) check_cuda(cudaMemsetAsync(run_begin, 0, run_bytes), "cudaMemsetAsync");
}

}  // namespace

namespace cuda_detail {

void selective_scan_forward_into(const ScanInputs& in, const Tensor& out, const Tensor& last_state,
                                 const Tensor& chunk_states) {
  ScanArgs p = prepare(in, false);
  check_same(out, "selective_scan out", in.u, in.u.shape());
  check_f32(last_state, "selective_scan last_state", {p.batch, p.dim, p.nstate});
  if (chunk_states.defined()) {
    check_f32(chunk_states, "selective_scan chunk_states", chunk_states_shape(p));
    p.chunk_states = chunk_states.data<float>();
  }
  if (p.L == 0) {
    // Nothing to scan: the last state is the initial one.
    if (in.initial_state.defined())
      check_cuda(
          cudaMemcpyAsync(last_state.raw(), in.initial_state.raw(), last_state.nbytes(), cudaMemcpyDeviceToDevice),
          "cudaMemcpyAsync");
    else
      zero_async({&last_state});
    return;
  }
  if (p.batch == 0 || p.dim == 0) return;
  p.out = out.raw();
  p.last_state = last_state.data<float>();
  const bool f32 = in.u.dtype() == DType::f32;
  set_vector_flags(p, f32 ? 4 : 2);
  if (f32)
    run_output_variant<float>(p);
  else
    run_output_variant<__nv_bfloat16>(p);
}

void set_selective_scan_forward_variant(int variant) {
  MAMBA_CHECK(variant >= 0 && variant <= 4, "selective_scan (cuda): forward variant must be 0..4, got ", variant);
  forward_variant = variant;
}

void set_selective_scan_splits(int forward, int backward) {
  MAMBA_CHECK(forward >= 0 && backward >= 0, "selective_scan (cuda): split counts must be ≥ 0, got ", forward, " and ",
              backward);
  forced_forward_splits = forward;
  forced_backward_splits = backward;
}

void set_selective_scan_backward_variant(int variant) {
  MAMBA_CHECK(variant == 0 || variant == 1, "selective_scan (cuda): backward variant must be 0 or 1, got ", variant);
  backward_variant = variant;
}

void selective_scan_backward_into(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state,
                                  const ScanGrads& g) {
  ScanArgs p = prepare(in, false);
  check_same(dout, "selective_scan dout", in.u, in.u.shape());
  if (in.chunk_states.defined()) {
    check_f32(in.chunk_states, "selective_scan chunk_states", chunk_states_shape(p));
    p.chunk_states = in.chunk_states.data<float>();
  }
  if (dlast_state.defined()) check_f32(dlast_state, "selective_scan dlast_state", {p.batch, p.dim, p.nstate});
  const Shape rows{p.batch, p.L, p.dim}, state_rows{p.batch, p.L, p.nstate}, states{p.batch, p.dim, p.nstate};
  check_same(g.du, "selective_scan du", in.u, rows);
  check_same(g.ddelta, "selective_scan ddelta", in.u, rows);
  check_same(g.dB, "selective_scan dB", in.u, state_rows);
  check_same(g.dC, "selective_scan dC", in.u, state_rows);
  check_f32(g.dA, "selective_scan dA", {p.dim, p.nstate});
  auto optional = [](const Tensor& grad, const Tensor& input, const char* name) {
    MAMBA_CHECK(grad.defined() == input.defined(), "selective_scan ", name, ": defined iff its input is");
  };
  optional(g.dz, in.z, "dz");
  optional(g.dD, in.D, "dD");
  optional(g.ddelta_bias, in.delta_bias, "ddelta_bias");
  optional(g.dinitial_state, in.initial_state, "dinitial_state");
  if (g.dz.defined()) check_same(g.dz, "selective_scan dz", in.u, rows);
  if (g.dD.defined()) check_f32(g.dD, "selective_scan dD", {p.dim});
  if (g.ddelta_bias.defined()) check_f32(g.ddelta_bias, "selective_scan ddelta_bias", {p.dim});
  if (g.dinitial_state.defined()) check_f32(g.dinitial_state, "selective_scan dinitial_state", states);
  zero_async({&g.dA, &g.dD, &g.ddelta_bias});
  if (p.L == 0 || p.batch == 0 || p.dim == 0) {
    zero_async({&g.du, &g.ddelta, &g.dz, &g.dB, &g.dC});
    if (g.dinitial_state.defined()) {
      if (dlast_state.defined())
        check_cuda(
            cudaMemcpyAsync(g.dinitial_state.raw(), dlast_state.raw(), dlast_state.nbytes(), cudaMemcpyDeviceToDevice),
            "cudaMemcpyAsync");
      else
        zero_async({&g.dinitial_state});
    }
    return;
  }
  p.dout = dout.raw();
  p.dlast_state = data_or_null<float>(dlast_state);
  p.du = g.du.raw();
  p.ddelta = g.ddelta.raw();
  p.dz = g.dz.defined() ? g.dz.raw() : nullptr;
  p.dA = g.dA.data<float>();
  p.dD = g.dD.defined() ? g.dD.data<float>() : nullptr;
  p.ddelta_bias = g.ddelta_bias.defined() ? g.ddelta_bias.data<float>() : nullptr;
  p.dinitial_state = g.dinitial_state.defined() ? g.dinitial_state.data<float>() : nullptr;
  set_vector_flags(p, in.u.dtype() == DType::f32 ? 4 : 2);
  if (in.u.dtype() == DType::f32) {
    // dB and dC are sums over channels, accumulated with float32 atomics straight into the outputs.
    p.dB = g.dB.data<float>();
    p.dC = g.dC.data<float>();
    const Tensor scratch_block = run_backward<float>(p, true);
    return;
  }
  const Tensor scratch_block = run_backward<__nv_bfloat16>(p, false);
  const int64_t n = g.dB.numel();
  narrow_pairs_kernel<<<blocks_for(n, 256), 256>>>(p.dB, p.dC, static_cast<__nv_bfloat16*>(g.dB.raw()),
                                                   static_cast<__nv_bfloat16*>(g.dC.raw()), n);
  check_launch("selective_scan dB/dC conversion");
}

}  // namespace cuda_detail

namespace cuda {

ScanOutputs selective_scan_forward(const ScanInputs& in) {
  ScanArgs p = prepare(in, false);
  ScanOutputs result;
  result.out = Tensor::empty(in.u.shape(), in.u.dtype(), Device::cuda);
  result.last_state = Tensor::empty({p.batch, p.dim, p.nstate}, DType::f32, Device::cuda);
  if (in.keep_chunk_states) result.chunk_states = Tensor::empty(chunk_states_shape(p), DType::f32, Device::cuda);
  cuda_detail::selective_scan_forward_into(in, result.out, result.last_state, result.chunk_states);
  return result;
}

ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state) {
  ScanArgs p = prepare(in, false);
  const Device gpu = Device::cuda;
  const DType dtype = in.u.dtype();
  ScanGrads g;
  g.du = Tensor::empty(in.u.shape(), dtype, gpu);
  g.ddelta = Tensor::empty(in.u.shape(), dtype, gpu);
  g.dB = Tensor::empty(in.B.shape(), dtype, gpu);
  g.dC = Tensor::empty(in.C.shape(), dtype, gpu);
  if (in.z.defined()) g.dz = Tensor::empty(in.u.shape(), dtype, gpu);
  // dA, dD and ddelta_bias back to back, so that one memset zeros them.
  const int64_t dA_size = int64_t(p.dim) * p.nstate;
  const Tensor sums = Tensor::empty({dA_size + 2 * int64_t(p.dim)}, DType::f32, gpu);
  g.dA = sums.slice(0, dA_size).view({p.dim, p.nstate});
  if (in.D.defined()) g.dD = sums.slice(dA_size, dA_size + p.dim);
  if (in.delta_bias.defined()) g.ddelta_bias = sums.slice(dA_size + p.dim, dA_size + 2 * int64_t(p.dim));
  if (in.initial_state.defined()) g.dinitial_state = Tensor::empty({p.batch, p.dim, p.nstate}, DType::f32, gpu);
  cuda_detail::selective_scan_backward_into(in, dout, dlast_state, g);
  return g;
}

namespace {
// The step over prepared args (δ, B and C apart or side by side).
Tensor run_state_update(ScanArgs p, const ScanInputs& step, Tensor& state) {
  check_f32(state, "selective_state_update state", {p.batch, p.dim, p.nstate});
  Tensor out = Tensor::empty(step.u.shape(), step.u.dtype(), Device::cuda);
  p.out = out.raw();
  const int64_t rows = int64_t(p.batch) * p.dim;
  if (rows == 0) return out;
  // bf16 weights are read as they are; others are read as f32 (f16 ones converted per call, as linear does).
  Tensor delta_proj;
  if (step.delta_proj.defined()) {
    delta_proj = step.delta_proj.dtype() == DType::bf16
                     ? step.delta_proj
                     : float32_on_device(step.delta_proj, "selective_scan delta_proj");
    p.delta_proj = delta_proj.raw();
    // 16-byte pieces of the weight rows, as many elements of the low-rank rows: those start on
    // 8-byte (bf16) or 16-byte (f32) boundaries when `delta` itself does and its rows are a whole
    // number of pieces apart.
    const int piece = int(16 / dtype_size(delta_proj.dtype()));
    p.vector_delta_proj =
        p.delta_rank % piece == 0 && p.delta_row_stride % piece == 0 && aligned16(p.delta_proj) && aligned16(p.delta);
  }
  const bool bf16_weight = delta_proj.defined() && delta_proj.dtype() == DType::bf16;
  // From batch 4 on, four lanes per (sequence, channel), each with twice the states and pieces of
  // W_δ of eight (130m batch 16: −2 to −5% per step); at batch 1 four were no faster
  // (docs/perf/cuda_model.md, m29).
  auto launch = [&](auto activation, auto weight) {
    auto go = [&](auto lanes) {
      constexpr int kLanes = decltype(lanes)::value;
      launch_overlapping("selective_state_update kernel",
                         state_update_kernel<decltype(activation), decltype(weight), kLanes>,
                         dim3(blocks_for(rows * kLanes, 128)), dim3(128), 0, p, state.data<float>());
    };
    if (p.batch >= 4)
      go(std::integral_constant<int, 4>{});
    else
      go(std::integral_constant<int, 8>{});
  };
  if (step.u.dtype() == DType::f32)
    bf16_weight ? launch(float{}, __nv_bfloat16{}) : launch(float{}, float{});
  else
    bf16_weight ? launch(__nv_bfloat16{}, __nv_bfloat16{}) : launch(__nv_bfloat16{}, float{});
  check_launch("selective_state_update kernel");
  return out;
}
}  // namespace

Tensor selective_state_update(const ScanInputs& step, Tensor& state) {
  return run_state_update(prepare(step, true), step, state);
}

Tensor selective_state_update_packed(const ScanInputs& step, const Tensor& delta_B_C, Tensor& state) {
  MAMBA_CHECK(delta_B_C.defined(), "selective_state_update_packed: delta_B_C is missing");
  return run_state_update(prepare(step, true, delta_B_C), step, state);
}

}  // namespace cuda
}  // namespace mamba::ops

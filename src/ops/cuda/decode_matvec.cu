// Decode product on the tensor cores (see decode_matvec.cuh for what it computes).
//
// Work split. A warp owns 8 output columns (one mma n-tile) and a range of k; the 16 rows of the
// mma are the rows of x (rows past `rows` read zeros). Lane (g, t) = (lane / 4, lane % 4) loads
// W[column g][slice·32 + t·8 … + 7] as one 16-byte vector and x's rows g and g + 8 at the same
// positions from shared memory; the reduction over k does not care which position goes into which
// mma slot, so these 8 positions feed two m16n8k16 products (positions 0–3 and 4–7) as they lie,
// with no shuffles. For weights of at most kDecodeLargeWeight elements a warp's weight loads go by
// cp.async into its own part of a shared-memory ring of kStages units (a unit: one tile's batch of
// kBatch slices) without holding registers, so kStages units are in flight before the kernel waits
// for the one before it, and kStages − 1 while it multiplies; each lane reads back only what it
// copied itself. Larger weights, streamed for longer, go through registers, one unit ahead: the ring
// read them more slowly (docs/perf/cuda_model.md, m46). A block's 8 warps are `groups` column tiles
// × `splits` k ranges; the k ranges are summed through shared memory, then the epilogue writes each
// column's value (+ bias) to its output piece; piece 0's columns, with a conv step, are kept in
// shared memory and go through it after the block's last tile. Blocks walk column tiles with a grid
// stride, so x is staged once per block.
#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/decode_matvec.cuh"

namespace mamba::ops::cuda_detail {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kSlice = 32;  // positions of k per warp step: 4 lanes × 8
constexpr int kBatch = 8;   // slices of one unit of a warp's weight stream
constexpr size_t ring_bytes(int stages) { return size_t(stages) * kWarps * kBatch * 32 * sizeof(uint4); }
// Staged rows are k + 8 bf16 long, so rows g = 0…7 start in different 16-byte bank groups and the
// fragment loads of a warp take the minimum of 4 shared-memory wavefronts.
constexpr int kRowPad = 8;
// The most columns of a conv step's piece one block keeps in shared memory until its last tile.
constexpr int kConvColumns = 128;

// The pre-norm's sums of squares are taken per chunk of a row: 32 vectors of 8 positions, one
// warp-wide staging item each.
__host__ __device__ constexpr int norm_chunks(int64_t k) { return int((k + 255) / 256); }

// Shared memory: the weight ring ([stages][kWarps][kBatch][32 lanes] uint4), the staged rows, then
// kWarps × 32 float4 for the k-split partial sums, then with the pre-norm the chunk sums of squares
// ([rows][norm_chunks] f32), then with a conv step the block's conv-column sums ([rows][kConvColumns]
// f32), which go through the conv step after the last tile.
size_t shared_bytes(int stages, int64_t rows, int64_t k, bool conv, bool norm) {
  return ring_bytes(stages) + size_t(rows) * size_t(k + kRowPad) * sizeof(__nv_bfloat16) +
         kWarps * 32 * sizeof(float4) + (norm ? size_t(rows) * norm_chunks(k) * sizeof(float) : 0) +
         (conv ? size_t(rows) * kConvColumns * sizeof(float) : 0);
}

int device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&value, attribute, device), "cudaDeviceGetAttribute");
  return value;
}

// The most shared memory a block may take, and the most with two blocks on an SM (the plans below
// count on two; the ring is sized to keep them).
size_t block_limit() {
  static const size_t limit = size_t(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
  return limit;
}
size_t two_block_limit() {
  static const size_t limit =
      std::min(block_limit(), size_t(device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor) -
                                     2 * device_attribute(cudaDevAttrReservedSharedMemoryPerBlock)) /
                                  2);
  return limit;
}

// Units of the weight ring: 3 where two blocks still fit on an SM with them, else 2 (one block per
// SM: at 16 rows of the 130m shape still faster than registers at two, docs/perf/cuda_model.md m46);
// 0 (registers) for weights past kDecodeLargeWeight elements or rows past 2048 positions.
int stages_for(int64_t rows, int64_t k, int64_t n, bool conv, bool norm) {
  if (n * k > kDecodeLargeWeight || k > kDecodeLongestRowAbove4) return 0;
  if (shared_bytes(3, rows, k, conv, norm) <= two_block_limit()) return 3;
  return shared_bytes(2, rows, k, conv, norm) <= block_limit() ? 2 : 0;
}

// How a product is split: warps split k while each keeps at least 4 slices (4 weight loads of 16
// bytes in flight), the rest of the block's 8 warps take neighbouring column tiles of 8 columns
// (`groups` of them); blocks walk tiles of 8·groups columns with a grid stride.
struct Plan {
  int splits, groups, slices_per_split, grid;
};

Plan plan(int64_t k, int64_t n) {
  const int slices = int((k + kSlice - 1) / kSlice);
  int splits = 1;
  while (splits < kWarps && slices / (splits * 2) >= 4) splits *= 2;
  const int groups = kWarps / splits;
  const int64_t tiles = (n + 8 * groups - 1) / (8 * groups);
  // Two blocks fit on an SM (their shared memory is kept within half of it: stages_for); more
  // tiles are walked by the same blocks, which then stage (and normalise) x once for all of them.
  // Every block reads all rows of x from L2, which at 16 rows is more traffic than the weight's,
  // yet two blocks per SM still beat one there (130m batch 16: 0.90 → 0.86 ms per step,
  // docs/perf/cuda_model.md, m27).
  const int grid = int(std::min<int64_t>(tiles, 2 * multiprocessor_count()));
  return {splits, groups, (slices + splits - 1) / splits, grid};
}

// Columns of the conv step's piece that one block of `plan` owns (whole tiles).
int64_t conv_columns_per_block(const Plan& plan, int64_t conv_channels) {
  const int64_t tile = 8 * plan.groups, tiles = (conv_channels + tile - 1) / tile;
  return (tiles + plan.grid - 1) / plan.grid * tile;
}

// The 8 positions of one staged vector for the pre-norm: x (bf16), the residual (f32, zeros
// without one) and the norm weight, all loaded before any is used.
struct RowPiece {
  uint4 x;
  float4 residual_lo, residual_hi, weight_lo, weight_hi;
};

__device__ __forceinline__ RowPiece load_piece(const DecodeMatvecArgs& p, int row, int position) {
  const int64_t at = int64_t(row) * p.k + position;
  RowPiece piece{*reinterpret_cast<const uint4*>(p.x + at), make_float4(0, 0, 0, 0), make_float4(0, 0, 0, 0),
                 *reinterpret_cast<const float4*>(p.norm_weight + position),
                 *reinterpret_cast<const float4*>(p.norm_weight + position + 4)};
  if (p.residual) {
    piece.residual_lo = *reinterpret_cast<const float4*>(p.residual + at);
    piece.residual_hi = *reinterpret_cast<const float4*>(p.residual + at + 4);
  }
  return piece;
}

// s = x + residual of one piece.
__device__ __forceinline__ void residual_sum(const RowPiece& piece, float (&s)[8]) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&piece.x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    s[2 * i] = f.x, s[2 * i + 1] = f.y;
  }
  const float4 a = piece.residual_lo, b = piece.residual_hi;
  s[0] += a.x, s[1] += a.y, s[2] += a.z, s[3] += a.w, s[4] += b.x, s[5] += b.y, s[6] += b.z, s[7] += b.w;
}

// Staging loops issue kStageUnroll vectors' loads per thread before using any, so that a block's
// rows arrive in a few round trips to L2 rather than one per vector; the pre-norm's pieces are 20
// registers each, so it takes kNormStageUnroll (at 4 the kernel would pass 128 registers).
constexpr int kStageUnroll = 4;
constexpr int kNormStageUnroll = 2;

// The pieces of the pre-norm items base + u·kThreads, u < kNormStageUnroll (items are (row, vector)
// with rows padded to per_row vectors; padding and items past the rows load nothing).
__device__ __forceinline__ void load_pieces(const DecodeMatvecArgs& p, int base, int total, int per_row,
                                            RowPiece (&pieces)[kNormStageUnroll]) {
#pragma unroll
  for (int u = 0; u < kNormStageUnroll; ++u) {
    const int i = base + u * kThreads, v = i % per_row;
    if (i < total && v < p.k / 8) pieces[u] = load_piece(p, i / per_row, v * 8);
  }
}

// Stages the rows the product reads into shared memory ([rows][k + kRowPad] bf16): x, or with the
// pre-norm s ⊙ w rounded to bf16, s = x + residual, in one pass (block 0 also writes s to
// residual_out). The norm's 1/rms is a factor per row, so the product's sums are scaled by it
// afterwards (row_rstd): the pass needs no row sum before it stores, and the product starts one
// block barrier after the loads. The rows' sums of squares are taken per chunk (32 vectors of 8
// positions, one warp-wide item each, so a warp's sum belongs to one row) into `chunk_sums`, and a
// row's sum over its chunks in order (no atomics: the result does not depend on timing).
__device__ void stage_rows(const DecodeMatvecArgs& p, __nv_bfloat16* xs, float* chunk_sums) {
  const int stride = p.k + kRowPad, vectors = p.k / 8;
  if (!p.norm_weight) {
    const int total = p.rows * vectors;
    for (int base = threadIdx.x; base < total; base += kThreads * kStageUnroll) {
      uint4 v[kStageUnroll];
#pragma unroll
      for (int u = 0; u < kStageUnroll; ++u) {
        const int i = base + u * kThreads;
        if (i < total) v[u] = *reinterpret_cast<const uint4*>(p.x + int64_t(i / vectors) * p.k + i % vectors * 8);
      }
#pragma unroll
      for (int u = 0; u < kStageUnroll; ++u) {
        const int i = base + u * kThreads;
        if (i < total) *reinterpret_cast<uint4*>(xs + i / vectors * stride + i % vectors * 8) = v[u];
      }
    }
    return;
  }
  const int lane = threadIdx.x % 32, per_row = norm_chunks(p.k) * 32, total = p.rows * per_row;
  // Items i = base + u·kThreads: a warp's 32 items share one row and chunk (per_row is whole warps).
  for (int base = threadIdx.x; base < total; base += kThreads * kNormStageUnroll) {
    RowPiece pieces[kNormStageUnroll];
    load_pieces(p, base, total, per_row, pieces);
#pragma unroll
    for (int u = 0; u < kNormStageUnroll; ++u) {
      const int i = base + u * kThreads, r = i / per_row, v = i % per_row;
      if (i >= total) break;  // the same for the whole warp
      float squares = 0.0f;
      if (v < vectors) {
        float s[8];
        residual_sum(pieces[u], s);
        if (blockIdx.x == 0) {
          float4* out = reinterpret_cast<float4*>(p.residual_out + int64_t(r) * p.k + v * 8);
          out[0] = make_float4(s[0], s[1], s[2], s[3]);
          out[1] = make_float4(s[4], s[5], s[6], s[7]);
        }
        const float4 wa = pieces[u].weight_lo, wb = pieces[u].weight_hi;
        const float w[8] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
        uint4 packed;
        __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          squares = fmaf(s[2 * e], s[2 * e], squares);
          squares = fmaf(s[2 * e + 1], s[2 * e + 1], squares);
          pairs[e] = __floats2bfloat162_rn(s[2 * e] * w[2 * e], s[2 * e + 1] * w[2 * e + 1]);
        }
        *reinterpret_cast<uint4*>(xs + r * stride + v * 8) = packed;
      }
      squares = warp_sum(squares);
      if (lane == 0) chunk_sums[i / 32] = squares;
    }
  }
}

// 1/rms of staged row `row` (after the block barrier that follows stage_rows).
__device__ __forceinline__ float row_rstd(const DecodeMatvecArgs& p, const float* chunk_sums, int row) {
  const int chunks = norm_chunks(p.k);
  float sum = 0.0f;
  for (int c = 0; c < chunks; ++c) sum += chunk_sums[row * chunks + c];
  return rsqrtf(sum / float(p.k) + p.eps);
}

// The causal conv step + SiLU of one channel of one row, as conv_step_kernel computes it; the
// projection enters rounded to bf16, as the separate ops would have stored it.
__device__ float conv_step(const DecodeMatvecArgs& p, int row, int channel, int channels, float projected) {
  const int history = p.conv_width - 1;
  float* s = p.conv_state + (int64_t(row) * channels + channel) * history;
  const float* w = p.conv_weight + int64_t(channel) * p.conv_width;
  const float x = __bfloat162float(__float2bfloat16_rn(projected));
  float acc = p.conv_bias ? p.conv_bias[channel] : 0.0f;
  for (int k = 0; k < history; ++k) acc = fmaf(w[k], s[k], acc);
  acc = fmaf(w[history], x, acc);
  for (int k = 0; k + 1 < history; ++k) s[k] = s[k + 1];
  if (history > 0) s[history - 1] = x;
  return acc * sigmoid(acc);
}

// Writes the mma accumulator of column tile `tile` (c0, c1: row g, columns 2t, 2t + 1; c2, c3:
// row g + 8), scaled by its row's factor (the pre-norm's 1/rms, else 1), to the output pieces;
// columns of a conv step's piece go to `conv_sums` (slot `conv_slot` + their place in the tile) and
// through the conv step after the block's last tile, all at once: the step's loads of the conv
// state would otherwise hold up every tile.
__device__ void store_tile(const DecodeMatvecArgs& p, int tile, const float (&c)[4], float scale_lo, float scale_hi,
                           int g, int t, float* conv_sums, int conv_slot) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), column = tile * 8 + 2 * t + (i & 1);
    if (row >= p.rows || column >= p.n) continue;
    const float v = c[i] * (i >= 2 ? scale_hi : scale_lo) + (p.bias ? p.bias[column] : 0.0f);
    int piece = 0;
    while (piece + 1 < p.pieces && column >= p.piece_begin[piece + 1]) ++piece;
    const int width = p.piece_begin[piece + 1] - p.piece_begin[piece], j = column - p.piece_begin[piece];
    if (piece == 0 && p.conv_state)
      conv_sums[row * kConvColumns + conv_slot + 2 * t + (i & 1)] = v;
    else
      p.out[piece][int64_t(row) * width + j] = __float2bfloat16_rn(v);
  }
}

// The conv step of the block's conv-piece columns, from their sums in shared memory.
template <int kGroups>
__device__ void conv_steps(const DecodeMatvecArgs& p, const float* conv_sums) {
  constexpr int kTile = 8 * kGroups;
  const int channels = p.piece_begin[1], tiles = (channels + kTile - 1) / kTile;
  const int block_tiles = (tiles - int(blockIdx.x) + int(gridDim.x) - 1) / int(gridDim.x);
  for (int i = threadIdx.x; i < p.rows * block_tiles * kTile; i += kThreads) {
    const int row = i / (block_tiles * kTile), slot = i % (block_tiles * kTile);
    const int column = (int(blockIdx.x) + slot / kTile * int(gridDim.x)) * kTile + slot % kTile;
    if (column < channels)
      p.out[0][int64_t(row) * channels + column] =
          __float2bfloat16_rn(conv_step(p, row, column, channels, conv_sums[row * kConvColumns + slot]));
  }
}

template <int kGroups, int kStages>
__global__ void __launch_bounds__(kThreads) decode_matvec_kernel(DecodeMatvecArgs p, int slices_per_split) {
  extern __shared__ __align__(16) unsigned char shared[];
  constexpr int kSplits = kWarps / kGroups;
  constexpr size_t kRingBytes = ring_bytes(kStages);
  uint4* ring = reinterpret_cast<uint4*>(shared);
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(shared + kRingBytes);
  float4* partial =
      reinterpret_cast<float4*>(shared + kRingBytes + size_t(p.rows) * (p.k + kRowPad) * sizeof(__nv_bfloat16));
  float* chunk_sums = reinterpret_cast<float*>(partial + kWarps * 32);
  float* conv_sums = chunk_sums + (p.norm_weight ? p.rows * norm_chunks(p.k) : 0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int group = warp % kGroups, split = warp / kGroups;
  const int tiles = (p.n + 8 * kGroups - 1) / (8 * kGroups);
  const int first_slice = split * slices_per_split;
  const int end_slice = min((p.k + kSlice - 1) / kSlice, first_slice + slices_per_split);
  // Every warp runs the same number of batches per tile, so the block's barriers line up.
  const int batches = (slices_per_split + kBatch - 1) / kBatch;

  // Calls f(i, source, inside) for the 16-byte weight pieces of (tile, batch) this lane multiplies.
  auto for_pieces = [&](int tile, int batch, auto f) {
    const int column = (tile * kGroups + group) * 8 + g;
    const __nv_bfloat16* row = p.weight + int64_t(column) * p.k + t * 8;
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int s = first_slice + batch * kBatch + i;
      const bool inside = column < p.n && s < end_slice && s * kSlice + t * 8 < p.k;
      f(i, inside ? row + s * kSlice : p.weight, inside);
    }
  };
  // Registers: two units, the next one's loads issued before this one is multiplied.
  uint4 w[kBatch];
  auto load = [&](uint4(&dst)[kBatch], int tile, int batch) {
    for_pieces(tile, batch, [&](int i, const __nv_bfloat16* src, bool inside) {
      dst[i] = inside ? __ldg(reinterpret_cast<const uint4*>(src)) : make_uint4(0, 0, 0, 0);
    });
  };
  // Ring: the unit kStages ahead of the one multiplied goes into the slot that one leaves; each
  // unit's copies are one commit group (empty past the walk, so that every wait counts the same groups).
  int ahead_tile = blockIdx.x, ahead_batch = 0, slot = 0;
  auto issue_ahead = [&](int into) {
    if (ahead_tile < tiles) {
      uint4* stage = ring + (into * kWarps + warp) * kBatch * 32 + lane;
      for_pieces(ahead_tile, ahead_batch,
                 [&](int i, const __nv_bfloat16* src, bool inside) { copy_async_16(stage + i * 32, src, inside); });
      if (++ahead_batch == batches) ahead_batch = 0, ahead_tile += gridDim.x;
    }
    commit_async_copies();
  };

  int tile = blockIdx.x, batch = 0;
  // Before the wait: see decode_matvec.cuh.
  if constexpr (kStages > 0)
    for (int into = 0; into < kStages; ++into) issue_ahead(into);
  else
    load(w, tile, 0);
  wait_for_previous_kernels();
  allow_next_kernel_launch();
  stage_rows(p, xs, chunk_sums);
  __syncthreads();

  const int stride = p.k + kRowPad;
  const __nv_bfloat16* row_lo = xs + g * stride;
  const __nv_bfloat16* row_hi = xs + (g + 8) * stride;
  const bool has_lo = g < p.rows, has_hi = g + 8 < p.rows;
  const float scale_lo = p.norm_weight && has_lo ? row_rstd(p, chunk_sums, g) : 1.0f;
  const float scale_hi = p.norm_weight && has_hi ? row_rstd(p, chunk_sums, g + 8) : 1.0f;
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  while (tile < int(tiles)) {
    int next_tile = tile, next_batch = batch + 1;
    if (next_batch == batches) next_tile += gridDim.x, next_batch = 0;
    uint4 w_next[kBatch];
    if constexpr (kStages > 0)
      wait_async_copies_but<kStages - 1>();  // this thread's copies of the unit have landed
    else
      load(w_next, next_tile, next_batch);
    const uint4* stage = ring + (slot * kWarps + warp) * kBatch * 32 + lane;
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int s = first_slice + batch * kBatch + i;
      if (s >= end_slice) break;
      const int position = s * kSlice + t * 8;
      uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
      if (position < p.k) {
        if (has_lo) lo = *reinterpret_cast<const uint4*>(row_lo + position);
        if (has_hi) hi = *reinterpret_cast<const uint4*>(row_hi + position);
      }
      const uint4 piece = kStages > 0 ? stage[i * 32] : w[i];
      mma_bf16(c, lo.x, hi.x, lo.y, hi.y, piece.x, piece.y);
      mma_bf16(c, lo.z, hi.z, lo.w, hi.w, piece.z, piece.w);
    }
    if constexpr (kStages > 0) {
      issue_ahead(slot);  // the slot is read (the products above used it): refill it
      slot = slot + 1 == kStages ? 0 : slot + 1;
    } else {
#pragma unroll
      for (int i = 0; i < kBatch; ++i) w[i] = w_next[i];
    }
    if (next_batch == 0) {
      if constexpr (kSplits > 1) {
        partial[warp * 32 + lane] = make_float4(c[0], c[1], c[2], c[3]);
        __syncthreads();
        if (split == 0)
          for (int other = 1; other < kSplits; ++other) {
            const float4 q = partial[(other * kGroups + group) * 32 + lane];
            c[0] += q.x, c[1] += q.y, c[2] += q.z, c[3] += q.w;
          }
      }
      if (split == 0)
        store_tile(p, tile * kGroups + group, c, scale_lo, scale_hi, g, t, conv_sums,
                   (tile / int(gridDim.x)) * 8 * kGroups + group * 8);
      if constexpr (kSplits > 1) __syncthreads();  // partial is rewritten for the next tile
      c[0] = c[1] = c[2] = c[3] = 0.0f;
    }
    tile = next_tile, batch = next_batch;
  }
  if (p.conv_state) {
    __syncthreads();
    conv_steps<kGroups>(p, conv_sums);
  }
}

template <int kGroups, int kStages>
void launch_with(const DecodeMatvecArgs& p, const Plan& plan) {
  const size_t bytes = shared_bytes(kStages, p.rows, p.k, p.conv_state != nullptr, p.norm_weight != nullptr);
  static size_t allowed = 48 * 1024;
  if (bytes > allowed) {
    check_cuda(cudaFuncSetAttribute(decode_matvec_kernel<kGroups, kStages>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(bytes)),
               "cudaFuncSetAttribute (decode mat-vec)");
    allowed = bytes;
  }
  launch_overlapping("decode mat-vec", decode_matvec_kernel<kGroups, kStages>, dim3(unsigned(plan.grid)),
                     dim3(kThreads), bytes, p, plan.slices_per_split);
}

template <int kGroups>
void launch(const DecodeMatvecArgs& p, const Plan& plan) {
  switch (stages_for(p.rows, p.k, p.n, p.conv_state != nullptr, p.norm_weight != nullptr)) {
    case 3:
      launch_with<kGroups, 3>(p, plan);
      break;
    case 2:
      launch_with<kGroups, 2>(p, plan);
      break;
    default:
      launch_with<kGroups, 0>(p, plan);
  }
}

}  // namespace

bool decode_matvec_fits(int64_t rows, int64_t k, int64_t n, const void* x, const void* weight, int64_t conv_channels) {
  if (rows < 1 || rows > kDecodeMaxRows || k <= 0 || k % 8 != 0 || n <= 0 || n > INT32_MAX / 2) return false;
  const bool conv_fits = conv_channels == 0 || conv_columns_per_block(plan(k, n), conv_channels) <= kConvColumns;
  // Shared memory counted with the pre-norm's chunk sums, whether or not the product has one.
  return (rows <= 4 || (n * k <= kDecodeLargeWeight && k <= kDecodeLongestRowAbove4)) && conv_fits && aligned16(x) &&
         aligned16(weight) && shared_bytes(0, rows, k, conv_channels > 0, true) <= block_limit();
}

void decode_matvec(const DecodeMatvecArgs& p) {
  if (p.rows == 0 || p.n == 0) return;
  const Plan split = plan(p.k, p.n);
  switch (split.groups) {
    case 1:
      launch<1>(p, split);
      break;
    case 2:
      launch<2>(p, split);
      break;
    case 4:
      launch<4>(p, split);
      break;
    default:
      launch<8>(p, split);
      break;
  }
}

}  // namespace mamba::ops::cuda_detail

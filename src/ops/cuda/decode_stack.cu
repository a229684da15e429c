// The decode step of a whole Mamba-1 stack as one kernel (ops/decode_stack.h).
//
// One block per multiprocessor (a cooperative launch, so all are resident); block b owns inner
// channels [b·cb, (b+1)·cb) and model columns [b·ob, (b+1)·ob). One thread of its last warp is the
// producer: it walks the block's weight slices of every layer in the order they are used (ChunkWalk)
// — W_in's x rows and z rows of its channels, W_x's columns of its channels (arranged by block
// beforehand: decode_stack_x_proj_blocks), W_dt's rows of its channels, W_out's rows of its columns —
// and copies each chunk of at most kSlotBytes into the next free slot of a shared-memory ring
// (cp.async.bulk, completion counted on the slot's mbarrier). It waits only for free slots, never
// for data, so HBM keeps streaming while the other warps wait at the grid's barriers. A few W_in
// rows bypass the ring: each consumer warp holds one in registers (kHeldPieces). The eight consumer
// warps run three phases a layer, each ended by a grid-wide barrier:
//
//   1. s = out + residual, the pre-norm, the block's rows of W_in (a warp per row, lanes along d),
//      the conv step of its channels, and its partial sums of x_proj over them, added into
//      integer fixed-point sums (StackArgs::fixed_sums: exact, so no order of arrival matters).
//   2. δ_low, B, C from those sums, δ from its W_dt rows, the state update of its channels →
//      y[its channels].
//   3. Its rows of W_out against all of y → out[its columns].
//
// Values written during the kernel by other blocks are read with ld.global.cg (L2, not the
// incoherent L1); s alternates between two buffers since every block reads all of it in phase 1
// while the owners of each column write it. The grid barrier is one counter, zero at launch, that
// only grows; the last block to leave resets it. Two to 16 sequences run in a second kernel (below,
// "Several sequences") of the same shape, with its products on the tensor cores.
#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/decode_stack.h"

namespace mamba::ops::cuda {

namespace {
using namespace cuda_detail;

constexpr int kMaxLayers = 64;
constexpr int kConsumerWarps = 8;
constexpr int kConsumers = kConsumerWarps * 32;
constexpr int kThreads = kConsumers + 32;  // and the producer warp
constexpr int kSlotBytes = 16384;
constexpr int kMaxSlots = 16;
constexpr int kPiece = 256;  // elements of a row a warp reads at once: 32 lanes × 8 bf16
constexpr int kMaxConvWidth = 4;
// Where d ≤ kHeldPieces · kPiece each consumer warp loads up to kHeldRowsPerWarp x rows of the next
// layer's W_in into its registers (kHeldPieces 16-byte pieces a lane and row) as soon as it has used
// this layer's: those rows bypass the ring, whose full slots stop the stream while the layer's chain
// of barriers runs.
constexpr int kHeldPieces = 8, kHeldRowsPerWarp = 1;
// The weight bytes a block streams per layer from which the stack beats the layer-by-layer kernels
// (docs/perf/cuda_model.md, session 26: the smaller of the two measured shapes, 130m at 76 KB, is
// 3–4% faster since m59 and m63; below it, unmeasured).
constexpr int64_t kStreamBoundBlockBytes = 64 * 1024;
constexpr int kFixedBits = 32, kFixedRange = 23;  // at most 2^8 blocks: 2^(8 + 23 + 32) ≤ 2^63

struct LayerArgs {
  const __nv_bfloat16* in_proj;   // [2E, d]
  const __nv_bfloat16* x_proj;    // [blocks, J, cb], J = R + 2N (decode_stack_x_proj_blocks)
  const __nv_bfloat16* dt_proj;   // [E, R]
  const __nv_bfloat16* out_proj;  // [d, E]
  const float* norm_weight;       // [d]
  const float* conv_weight;       // [E, K]
  const float* conv_bias;         // [E] or null
  const float* dt_bias;           // [E]
  const float* A;                 // [E, N]
  const float* D;                 // [E]
  float* conv_state;              // [E, K − 1]
  float* ssm_state;               // [E, N]
};

struct StackArgs {
  int layers, d, E, R, N, K, channels, columns, slots;  // channels, columns: per block (cb, ob)
  int slot_bytes;                                       // of each ring slot
  int held_rows;  // one row: x rows of W_in a block holds in registers (warp w: rows w, w + 8, …), a multiple of 8
  int rows, row_slots;  // several rows: the sequences, and the mma rows they take (8 or 16)
  float eps;
  const __nv_bfloat16* x;  // [rows, d]: layer 0's block input
  __nv_bfloat16* out;      // [rows, d]: the latest (several rows: the last) layer's output
  __nv_bfloat16* y;        // [row_slots, E]; rows past `rows` stay zero
  // One row: [2, d], s of even layers, then of odd ones. Several: [rows, d], s of the next layer,
  // written by each column's owner.
  float* residual;
  // Several rows: bf16(s ⊙ w_norm) of the next layer [row_slots, d] (rows past `rows` zero), and
  // each block's sums of s² over its columns [16, blocks].
  __nv_bfloat16* normed;
  float* square_sums;
  // x_proj's sums for even and odd layers as integers in units of 2^-kFixedBits, [2][rows][J], then
  // a flag [2] raised by a partial sum that is not finite or not below 2^kFixedRange: integer sums
  // are exact whatever order the blocks' atomics arrive in.
  unsigned long long* fixed_sums;
  unsigned* arrivals;  // the grid barrier's counter
  LayerArgs layer[kMaxLayers];
};
static_assert(sizeof(StackArgs) < 32000, "kernel parameters");

// One ring slot's copies: `rows` rows of `bytes` each, `src_stride` bytes apart in global memory
// and `dst_stride` apart in the slot.
struct Chunk {
  const void* src;
  unsigned bytes;
  int rows = 1;
  size_t src_stride = 0;
  unsigned dst_stride = 0;
};

// Block b's chunk of W_x's columns, W_x[:, b·cb : (b+1)·cb] as [J][cb], and of W_dt's rows.
__device__ Chunk x_proj_chunk(const StackArgs& p, const LayerArgs& w, int b) {
  const int J = p.R + 2 * p.N;
  return {w.x_proj + int64_t(b) * J * p.channels, unsigned(J) * p.channels * 2};
}
__device__ Chunk dt_proj_chunk(const StackArgs& p, const LayerArgs& w, int b) {
  return {w.dt_proj + int64_t(b) * p.channels * p.R, unsigned(p.channels) * p.R * 2};
}

// A layer's weight chunks, in the order the consumers take them: in_proj x rows past the held ones,
// in_proj z rows (rows per chunk `in_rows`), one chunk of W_x's columns, one of W_dt's rows, then
// out_proj rows.
struct Schedule {
  int channels, held, in_rows, x_chunks, in_chunks, out_rows, out_chunks;
  __host__ __device__ Schedule(const StackArgs& p) : channels(p.channels), held(p.held_rows) {
    in_rows = min(p.channels, kSlotBytes / (2 * p.d));
    x_chunks = (p.channels - held + in_rows - 1) / in_rows;
    in_chunks = x_chunks + (p.channels + in_rows - 1) / in_rows;
    out_rows = min(p.columns, kSlotBytes / (2 * p.E));
    out_chunks = (p.columns + out_rows - 1) / out_rows;
  }
  // W_in chunk c's first row among the block's 2cb (its x rows, then its z rows) and its row count.
  __host__ __device__ int2 in_chunk(int c) const {
    const int first = c < x_chunks ? held + c * in_rows : (c - x_chunks) * in_rows;
    return {c < x_chunks ? first : channels + first, min(in_rows, channels - first)};
  }
  __device__ int chunks() const { return in_chunks + 2 + out_chunks; }
  __device__ Chunk chunk(const StackArgs& p, const LayerArgs& w, int b, int part) const {
    if (part < in_chunks) {  // W_in's x rows, then z rows, of the block's channels
      const int2 rows = in_chunk(part);
      const int half = rows.x / p.channels;
      const int64_t row0 = int64_t(half) * p.E + int64_t(b) * p.channels + rows.x % p.channels;
      return {w.in_proj + row0 * p.d, unsigned(rows.y) * p.d * 2};
    }
    if (part == in_chunks) return x_proj_chunk(p, w, b);
    if (part == in_chunks + 1) return dt_proj_chunk(p, w, b);
    const int c = part - in_chunks - 2, rows = min(out_rows, p.columns - c * out_rows);
    return {w.out_proj + (int64_t(b) * p.columns + c * out_rows) * p.E, unsigned(rows) * p.E * 2};
  }
};

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void barrier_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void barrier_arrive(uint64_t* bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared::cta.b64 state, [%0];\n}" ::"r"(shared_address(bar))
               : "memory");
}
__device__ __forceinline__ void barrier_expect_bytes(uint64_t* bar, unsigned bytes) {
  asm volatile(
      "{\n .reg .b64 state;\n mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}" ::"r"(shared_address(bar)),
      "r"(bytes)
      : "memory");
}
__device__ __forceinline__ void barrier_wait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred done;\n wait:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n @!done bra wait;\n}" ::
          "r"(shared_address(bar)),
      "r"(parity)
      : "memory");
}
// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to shared memory; the
// completion counts on `bar`.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   shared_address(dst)),
               "l"(src), "r"(bytes), "r"(shared_address(bar))
               : "memory");
}

// The consumer warps' own barrier (the producer never waits with them).
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory"); }

__device__ __forceinline__ uint64_t global_nanoseconds() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// Every block's consumers have arrived at barrier `index` (counted from 0 over the launch).
__device__ void grid_sync(unsigned* arrivals, int index) {
  consumers_sync();
  if (threadIdx.x == 0) {
    const unsigned target = unsigned(index + 1) * gridDim.x;
    // A release add: the block's writes (ordered before it by the block sync) are visible to
    // whoever acquires the count, without the sequentially consistent fence __threadfence is.
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(arrivals) : "memory");
    unsigned seen = 0;
    const uint64_t start = global_nanoseconds();
    for (;;) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(arrivals) : "memory");
      if (seen >= target) break;
      if (global_nanoseconds() - start > 20'000'000'000ull) __trap();  // a block that never arrives: fail, not hang
    }
  }
  consumers_sync();
}

// A warp's held row of W_in (see kHeldPieces): lane's pieces i · kPiece + 8 · lane, streamed past L1.
__device__ __forceinline__ void load_held(uint4 (&held)[kHeldPieces], const __nv_bfloat16* row, int d, int lane) {
#pragma unroll
  for (int i = 0; i < kHeldPieces; ++i)
    if (i * kPiece < d)  // volatile: issued here, not moved to the use a layer later
      asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(held[i].x), "=r"(held[i].y), "=r"(held[i].z), "=r"(held[i].w)
                   : "l"(row + i * kPiece + lane * 8));
}

// 8 bf16 (a 16-byte vector) as floats.
__device__ __forceinline__ void unpack8(uint4 v, float (&out)[8]) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// Σ over 8 bf16 pairs of two 16-byte vectors, added to acc.
__device__ __forceinline__ float dot8(uint4 w, uint4 a, float acc) {
  const unsigned wv[4] = {w.x, w.y, w.z, w.w}, av[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(__uint_as_float(wv[i] << 16), __uint_as_float(av[i] << 16), acc);
    acc = fmaf(__uint_as_float(wv[i] & 0xffff0000u), __uint_as_float(av[i] & 0xffff0000u), acc);
  }
  return acc;
}

// Σ over 8 bf16 weights (a 16-byte vector) times 8 floats, added to acc.
__device__ __forceinline__ float dot8(uint4 w, const float* a, float acc) {
  float wf[8];
  unpack8(w, wf);
#pragma unroll
  for (int i = 0; i < 8; ++i) acc = fmaf(wf[i], a[i], acc);
  return acc;
}

// A row of `length` (a multiple of kPiece) bf16 weights against a bf16 vector, both in shared
// memory, by one warp; every lane gets the sum.
__device__ __forceinline__ float warp_dot(const __nv_bfloat16* row, const __nv_bfloat16* vec, int length, int lane) {
  float acc0 = 0.0f, acc1 = 0.0f;
  int k = lane * 8;
  for (; k + kPiece < length; k += 2 * kPiece) {
    acc0 = dot8(*reinterpret_cast<const uint4*>(row + k), *reinterpret_cast<const uint4*>(vec + k), acc0);
    acc1 = dot8(*reinterpret_cast<const uint4*>(row + k + kPiece), *reinterpret_cast<const uint4*>(vec + k + kPiece),
                acc1);
  }
  if (k < length) acc0 = dot8(*reinterpret_cast<const uint4*>(row + k), *reinterpret_cast<const uint4*>(vec + k), acc0);
  return warp_sum(acc0 + acc1);
}

__device__ __forceinline__ float bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

__device__ __forceinline__ uint4 pack8(const float (&in)[8]) {
  unsigned w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
    w[i] = unsigned(__bfloat16_as_ushort(__float2bfloat16_rn(in[2 * i]))) |
           (unsigned(__bfloat16_as_ushort(__float2bfloat16_rn(in[2 * i + 1]))) << 16);
  return make_uint4(w[0], w[1], w[2], w[3]);
}
__device__ __forceinline__ void load8(const float* p, float (&out)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}
__device__ __forceinline__ void load8_cg(const float* p, float (&out)[8]) {
  const float4 a = __ldcg(reinterpret_cast<const float4*>(p)), b = __ldcg(reinterpret_cast<const float4*>(p) + 1);
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

// Block b's weight chunks of every layer, in the order the consumers take them (Layout: Schedule
// or RowsSchedule, which says what a layer's chunk `part` is).
template <typename Layout>
struct ChunkWalk {
  const StackArgs& p;
  Layout s;
  int b, layer = 0, part = 0;
  __device__ ChunkWalk(const StackArgs& args) : p(args), s(args), b(blockIdx.x) {}
  __device__ bool done() const { return layer >= p.layers; }
  __device__ Chunk next() {
    const Chunk chunk = s.chunk(p, p.layer[layer], b, part);
    if (++part == s.chunks()) part = 0, ++layer;
    return chunk;
  }
};

// The producer (one thread): every chunk of every layer, in order, into the ring.
template <typename Walk>
__device__ void produce(const StackArgs& p, unsigned char* ring, uint64_t* full, uint64_t* empty) {
  Walk walk(p);
  for (unsigned copied = 0; !walk.done(); ++copied) {
    const Chunk chunk = walk.next();
    const unsigned slot = copied % p.slots, use = copied / p.slots;
    if (use > 0) barrier_wait(&empty[slot], (use - 1) & 1);
    barrier_expect_bytes(&full[slot], chunk.bytes * chunk.rows);
    unsigned char* dst = ring + size_t(slot) * p.slot_bytes;
    for (int r = 0; r < chunk.rows; ++r)
      bulk_copy(dst + size_t(r) * chunk.dst_stride, static_cast<const char*>(chunk.src) + r * chunk.src_stride,
                chunk.bytes, &full[slot]);
  }
}

// Thread 0 sets up the ring's barriers and `extras` more of one arrival each; then the first lane of
// the producer warp fills the ring for the whole launch. Returns whether this thread is a consumer.
template <typename Layout>
__device__ bool start_ring(const StackArgs& p, unsigned char* ring, uint64_t* full, uint64_t* empty, uint64_t* extra,
                           int extras) {
  if (threadIdx.x == 0) {
    for (int i = 0; i < p.slots; ++i) {
      barrier_init(&full[i], 1);
      barrier_init(&empty[i], kConsumerWarps);
    }
    for (int i = 0; i < extras; ++i) barrier_init(&extra[i], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x / 32 == kConsumerWarps) {
    if (threadIdx.x % 32 == 0) produce<ChunkWalk<Layout>>(p, ring, full, empty);
    return false;
  }
  return true;
}

struct Shared {
  unsigned char* ring;
  uint64_t *full, *empty;
  __nv_bfloat16 *xs, *ys;  // the staged bf16(s ⊙ w_norm) [d] and y [E]
  float* rows;             // in_proj sums of the block's x rows, then z rows [2cb]
  float *u, *z, *delta;    // [cb] each
  float *dt_bias, *skip;   // the block's δ biases and D [cb] each
  float* dbc;              // δ_low, B, C [J]
  float* scratch;          // [32]
};

__host__ __device__ size_t shared_bytes(int slots, int d, int E, int channels, int J) {
  return size_t(slots) * kSlotBytes + 2 * kMaxSlots * sizeof(uint64_t) + size_t(d + E) * 2 +
         (size_t(7) * channels + J + 32) * sizeof(float) + 64;
}

__device__ Shared carve(unsigned char* base, const StackArgs& p) {
  Shared s;
  s.ring = base;
  s.full = reinterpret_cast<uint64_t*>(base + size_t(p.slots) * kSlotBytes);
  s.empty = s.full + kMaxSlots;
  s.xs = reinterpret_cast<__nv_bfloat16*>(s.empty + kMaxSlots);
  s.ys = s.xs + p.d;
  s.rows = reinterpret_cast<float*>(s.ys + p.E);
  s.u = s.rows + 2 * p.channels;
  s.z = s.u + p.channels;
  s.delta = s.z + p.channels;
  s.dt_bias = s.delta + p.channels;
  s.skip = s.dt_bias + p.channels;
  s.dbc = s.skip + p.channels;
  s.scratch = s.dbc + p.R + 2 * p.N;
  return s;
}

// The consumers' walk over the ring: chunk by chunk, each warp waiting for it to land and releasing
// it after use.
struct RingReader {
  const unsigned char* ring;
  int slot_bytes, slots;
  uint64_t *full, *empty;
  unsigned chunk = 0;
  __device__ const unsigned char* take() {
    const unsigned slot = chunk % slots;
    barrier_wait(&full[slot], (chunk / slots) & 1);
    return ring + size_t(slot) * slot_bytes;
  }
  __device__ void release() {
    __syncwarp();
    if (threadIdx.x % 32 == 0) barrier_arrive(&empty[chunk % slots]);
    ++chunk;
  }
};

__global__ void __launch_bounds__(kThreads, 1) decode_stack_kernel(const __grid_constant__ StackArgs p) {
  extern __shared__ __align__(128) unsigned char shared[];
  const Shared s = carve(shared, p);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  if (!start_ring<Schedule>(p, s.ring, s.full, s.empty, nullptr, 0)) return;

  const int b = blockIdx.x, d = p.d, E = p.E, N = p.N, R = p.R, J = R + 2 * N, cb = p.channels;
  const int c0 = b * cb, j0 = b * p.columns;
  const Schedule sched(p);
  RingReader ring{s.ring, p.slot_bytes, p.slots, s.full, s.empty};
  int barrier = 0;
  uint4 held[kHeldRowsPerWarp][kHeldPieces];
#pragma unroll
  for (int j = 0; j < kHeldRowsPerWarp; ++j)
    if (j * kConsumerWarps < sched.held)
      load_held(held[j], p.layer[0].in_proj + int64_t(c0 + warp + j * kConsumerWarps) * d, d, lane);
  for (int l = 0; l < p.layers; ++l) {
    const LayerArgs& w = p.layer[l];
    // Phase 1. s = out + residual (layer 0: x); this block writes its columns of s. Before the
    // barrier, what no other block writes: the first norm weights, the conv step's operands.
    const int k0 = tid * 8;
    float norm_first[8] = {};
    if (k0 < d) load8(w.norm_weight + k0, norm_first);
    float taps[kMaxConvWidth] = {}, history[kMaxConvWidth] = {}, conv_bias = 0.0f;
    if (tid < cb) {
#pragma unroll
      for (int k = 0; k < kMaxConvWidth; ++k) {
        if (k < p.K) taps[k] = w.conv_weight[int64_t(c0 + tid) * p.K + k];
        if (k + 1 < p.K) history[k] = w.conv_state[int64_t(c0 + tid) * (p.K - 1) + k];
      }
      conv_bias = w.conv_bias ? w.conv_bias[c0 + tid] : 0.0f;
      s.dt_bias[tid] = w.dt_bias[c0 + tid];
      s.skip[tid] = w.D[c0 + tid];
    }
    // The block's SSM states (only this block touches them) and their A, for phase 2.
    const int pairs = cb * N;
    float h_prev[4], a[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * kConsumers;
      h_prev[i] = e < pairs ? w.ssm_state[int64_t(c0) * N + e] : 0.0f;
      a[i] = e < pairs ? w.A[int64_t(c0) * N + e] : 0.0f;
    }
    if (l > 0) grid_sync(p.arrivals, barrier++);
    const __nv_bfloat16* in = l == 0 ? p.x : p.out;
    const float* residual_in = p.residual + size_t((l + 1) % 2) * d;
    float* residual_out = p.residual + size_t(l % 2) * d;
    float squares = 0.0f;
    for (int k = k0; k < d; k += kConsumers * 8) {
      float v[8], r[8] = {}, wn[8];
      unpack8(__ldcg(reinterpret_cast<const uint4*>(in + k)), v);
      if (l > 0) load8_cg(residual_in + k, r);
      if (k == k0)
        for (int i = 0; i < 8; ++i) wn[i] = norm_first[i];
      else
        load8(w.norm_weight + k, wn);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        v[i] += r[i];
        squares = fmaf(v[i], v[i], squares);
        if (k + i >= j0 && k + i < j0 + p.columns) residual_out[k + i] = v[i];
        wn[i] *= v[i];
      }
      *reinterpret_cast<uint4*>(s.xs + k) = pack8(wn);
    }
    squares = warp_sum(squares);
    if (lane == 0) s.scratch[warp] = squares;
    consumers_sync();
    float total = 0.0f;
    for (int i = 0; i < kConsumerWarps; ++i) total += s.scratch[i];
    const float inv_rms = rsqrtf(total / float(d) + p.eps);

    // The block's x rows, then its z rows, of W_in: row r of the pair of halves to warp r % 8, the
    // held ones first (then the next layer's are loaded in their place).
#pragma unroll
    for (int j = 0; j < kHeldRowsPerWarp; ++j) {
      if (j * kConsumerWarps >= sched.held) break;
      const int row = warp + j * kConsumerWarps;
      float acc = 0.0f;
#pragma unroll
      for (int i = 0; i < kHeldPieces; ++i)
        if (i * kPiece < d) acc = dot8(held[j][i], *reinterpret_cast<const uint4*>(s.xs + i * kPiece + lane * 8), acc);
      acc = warp_sum(acc);
      if (lane == 0) s.rows[row] = acc;
      if (l + 1 < p.layers) load_held(held[j], p.layer[l + 1].in_proj + int64_t(c0 + row) * d, d, lane);
    }
    for (int c = 0; c < sched.in_chunks; ++c) {
      const unsigned char* chunk = ring.take();
      const int2 chunk_rows = sched.in_chunk(c);
      for (int r = 0; r < chunk_rows.y; ++r) {
        const int row = chunk_rows.x + r;
        if (row % kConsumerWarps != warp) continue;
        const float v = warp_dot(reinterpret_cast<const __nv_bfloat16*>(chunk) + size_t(r) * d, s.xs, d, lane);
        if (lane == 0) s.rows[row] = v;
      }
      ring.release();
    }
    consumers_sync();
    // The conv step + SiLU of the block's channels; z as the in-projection stores it.
    if (tid < cb) {
      const int kept = p.K - 1;
      const float x = bf16_round(s.rows[tid] * inv_rms);
      float* state = w.conv_state + int64_t(c0 + tid) * kept;
      float acc = conv_bias, last_tap = 0.0f;
#pragma unroll
      for (int k = 0; k < kMaxConvWidth; ++k) {
        if (k < kept) acc = fmaf(taps[k], history[k], acc);
        if (k == kept) last_tap = taps[k];
      }
      acc = fmaf(last_tap, x, acc);
#pragma unroll
      for (int k = 0; k < kMaxConvWidth - 1; ++k)
        if (k < kept) state[k] = k + 1 < kept ? history[k + 1] : x;
      s.u[tid] = bf16_round(acc * sigmoid(acc));
      s.z[tid] = bf16_round(s.rows[cb + tid] * inv_rms);
    }
    consumers_sync();
    {  // x_proj's partial sums over the block's channels: output j to thread j
      const __nv_bfloat16* wx = reinterpret_cast<const __nv_bfloat16*>(ring.take());
      for (int j = tid; j < J; j += kConsumers) {
        // All of the row's pieces (cb ≤ 32) loaded before the first FMA; a piece past cb reloads the
        // first and is not added.
        constexpr int kMaxPieces = 4;
        uint4 weights[kMaxPieces];
#pragma unroll
        for (int i = 0; i < kMaxPieces; ++i)
          weights[i] = *reinterpret_cast<const uint4*>(wx + size_t(j) * cb + (i * 8 < cb ? i * 8 : 0));
        float acc = 0.0f;
#pragma unroll
        for (int i = 0; i < kMaxPieces; ++i) {
          const float added = dot8(weights[i], s.u + (i * 8 < cb ? i * 8 : 0), acc);
          acc = i * 8 < cb ? added : acc;
        }
        unsigned long long* sums = p.fixed_sums + size_t(l % 2) * J;
        if (fabsf(acc) < float(1 << kFixedRange))  // false for NaN too
          atomicAdd(sums + j, static_cast<unsigned long long>(llrint(double(acc) * double(1ull << kFixedBits))));
        else
          atomicOr(p.fixed_sums + 2 * J + l % 2, 1ull);
      }
      ring.release();
    }
    grid_sync(p.arrivals, barrier++);

    // Phase 2. δ_low, B, C from the fixed-point sums, rounded to bf16 as x_proj stores them;
    // block 0 then clears the other layer parity's sums for the next layer.
    {
      const unsigned long long* sums = p.fixed_sums + size_t(l % 2) * J;
      if (tid < J) {
        const bool bad = __ldcg(p.fixed_sums + 2 * J + l % 2) != 0;
        const double sum = double(static_cast<long long>(__ldcg(sums + tid))) / double(1ull << kFixedBits);
        s.dbc[tid] = bad ? __int_as_float(0x7fc00000) : bf16_round(float(sum));
      }
      if (b == 0)
        for (int j = tid; j <= J; j += kConsumers)
          p.fixed_sums[j < J ? size_t((l + 1) % 2) * J + j : 2 * J + (l + 1) % 2] = 0;
      consumers_sync();
    }
    {  // δ of the block's channels: four at once a warp (channel warp + 8g to lanes 8g … 8g + 7, each
       // lane 8 of every 64 elements of the rank), so a warp's shared loads overlap instead of
       // following one another channel by channel
      const __nv_bfloat16* wdt = reinterpret_cast<const __nv_bfloat16*>(ring.take());
      const int c = warp + kConsumerWarps * (lane / 8), q = lane % 8;
      float acc = 0.0f;
      if (c < cb)
        for (int r = q * 8; r < R; r += 64)
          acc = dot8(*reinterpret_cast<const uint4*>(wdt + size_t(c) * R + r), s.dbc + r, acc);
      for (int offset = 4; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
      if (c < cb && q == 0) s.delta[c] = softplus(acc + s.dt_bias[c]);
      ring.release();
    }
    consumers_sync();
    // The state update: (channel, state) pairs, the N states of a channel on N adjacent lanes.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * kConsumers;
      if (i * kConsumers >= pairs) break;
      const int c = e / N, n = e % N;
      const bool active = e < pairs;
      const int cc = active ? c : 0;
      const float dl = s.delta[cc], u = s.u[cc];
      const float next = fmaf(exp2f(dl * a[i] * kLog2e), h_prev[i], dl * s.dbc[R + n] * u);
      if (active) w.ssm_state[int64_t(c0) * N + e] = next;
      float y = s.dbc[R + N + n] * next;
      for (int offset = N / 2; offset > 0; offset /= 2) y += __shfl_xor_sync(0xffffffffu, y, offset);
      if (active && n == 0) {
        y = fmaf(s.skip[c], u, y);
        const float zv = s.z[c];
        p.y[c0 + c] = __float2bfloat16_rn(y * (zv * sigmoid(zv)));
      }
    }
    grid_sync(p.arrivals, barrier++);

    // Phase 3. The block's columns of out_proj against all of y.
#pragma unroll 4
    for (int k = tid * 8; k < E; k += kConsumers * 8)
      *reinterpret_cast<uint4*>(s.ys + k) = __ldcg(reinterpret_cast<const uint4*>(p.y + k));
    consumers_sync();
    for (int c = 0; c < sched.out_chunks; ++c) {
      const unsigned char* chunk = ring.take();
      const int first = c * sched.out_rows, rows = min(sched.out_rows, p.columns - first);
      for (int r = 0; r < rows; ++r) {
        if ((first + r) % kConsumerWarps != warp) continue;
        const float v = warp_dot(reinterpret_cast<const __nv_bfloat16*>(chunk) + size_t(r) * E, s.ys, E, lane);
        if (lane == 0) p.out[j0 + first + r] = __float2bfloat16_rn(v);
      }
      ring.release();
    }
  }
  // The last block out resets the counter for the next launch.
  consumers_sync();
  if (tid == 0 && atomicAdd(p.arrivals, 1u) == unsigned(barrier + 1) * gridDim.x - 1) atomicExch(p.arrivals, 0u);
}

// ---------------------------------------------------------------------------------------------
// Several sequences (2 to 16 rows): the same blocks, ring and three phases, with every product on
// the tensor cores (mma m16n8k16): the rows of the activations are the mma's 16 rows (rows past
// `rows` are zeros, or only 8 are taken where rows ≤ 8) and 8 weight rows its n-tile. W_in's and
// W_out's chunks are a tile's 8 rows over a part of k (at most kMaxPart positions, one bulk copy a
// row, each row padded by kRowPad bytes so that lanes reading 8 rows at one offset meet in
// different banks). The activations they multiply — bf16(s ⊙ w_norm) in phase 1, y in phase 3 — are
// staged whole by bulk copy; the blocks that own a column tile of out_proj also write that tile's
// s, bf16(s ⊙ w_norm) of the next layer and its sums of s², so a block reads the next layer's input
// as a 16 × d bf16 copy and 16 sums a block instead of out and the residual.
constexpr int kRowsMax = 16;
// The fewest ring slots with which the several-rows kernel beat the layer-by-layer kernels
// (docs/perf/cuda_model.md, session 28: with 10 slots at 130m batch 16 and 8 at 1.4b batch 8 it
// did, with 5 at 1.4b batch 16, where the staged y takes 132 KB, it did not).
constexpr int kRowsSlotsThatPay = 8;
constexpr int kMaxPart = 1024;  // positions of k in one W_in or W_out chunk
constexpr int kRowPad = 64;     // bytes
constexpr int kRowSlotBytes = 8 * (2 * kMaxPart + kRowPad);
constexpr int kMaxConvPairs = 2;       // (row, channel) pairs of the conv step a consumer thread holds
constexpr int kMaxSumsPerThread = 16;  // x_proj's sums (rows × J) a consumer thread reads
constexpr int kMaxBlocks = 256;

// The chunks a product's k of `length` is cut into: the fewest of at most kMaxPart positions, each
// a whole number of 32-position slices (0 where none is).
__host__ __device__ inline int product_parts(int length) {
  for (int parts = (length + kMaxPart - 1) / kMaxPart; parts <= length / 32; ++parts)
    if (length % (32 * parts) == 0) return parts;
  return 0;
}

// A layer's chunks for several rows: W_in's parts of k, each in tiles of 8 of the block's 2cb rows
// (x rows, then z rows), W_x's columns, W_dt's rows, W_out's parts of k, each in tiles of 8 of the
// block's columns. Part-major, so that consecutive chunks go to different warps.
struct RowsSchedule {
  int in_tiles, in_parts, in_length, out_tiles, out_parts, out_length;
  __host__ __device__ RowsSchedule(const StackArgs& p)
      : in_tiles(2 * p.channels / 8),
        in_parts(product_parts(p.d)),
        in_length(p.d / max(in_parts, 1)),
        out_tiles(p.columns / 8),
        out_parts(product_parts(p.E)),
        out_length(p.E / max(out_parts, 1)) {}
  __host__ __device__ int in_chunks() const { return in_tiles * in_parts; }
  __host__ __device__ int chunks() const { return in_chunks() + 2 + out_tiles * out_parts; }
  __device__ Chunk chunk(const StackArgs& p, const LayerArgs& w, int b, int part) const {
    if (part < in_chunks()) {
      const int first = part % in_tiles * 8, piece = part / in_tiles;
      const int64_t row =
          first < p.channels ? int64_t(b) * p.channels + first : p.E + int64_t(b) * p.channels + first - p.channels;
      return {w.in_proj + row * p.d + piece * in_length, unsigned(in_length) * 2, 8, size_t(p.d) * 2,
              unsigned(in_length) * 2 + kRowPad};
    }
    if (part == in_chunks()) return x_proj_chunk(p, w, b);
    if (part == in_chunks() + 1) return dt_proj_chunk(p, w, b);
    const int c = part - in_chunks() - 2, first = c % out_tiles * 8, piece = c / out_tiles;
    return {w.out_proj + (int64_t(b) * p.columns + first) * p.E + piece * out_length, unsigned(out_length) * 2, 8,
            size_t(p.E) * 2, unsigned(out_length) * 2 + kRowPad};
  }
};

struct RowsShared {
  unsigned char* ring;
  uint64_t *full, *empty, *staged, *states_staged;  // the last two: the bulk copies into act
  __nv_bfloat16* act;        // [row_slots][max(d, E) + kRowPad / 2]: bf16(s ⊙ w_norm), then y; during
                             // phases 1 and 2 also (past the first's rows) the block's SSM states and A
  float* dbc;                // in act during phase 2: δ_low, B, C [16][J]
  float* delta;              // in act during phase 2: [16][cb]
  float* states;             // in act during phases 1 and 2: [rows][cb][N]
  float* A;                  // in act during phases 1 and 2: [cb][N]
  float* xz;                 // in_proj's x' and z of the block's rows [2cb][16]
  __nv_bfloat16* u;          // [16][cb], rows past `rows` zero
  __nv_bfloat16* delta_low;  // [16][R], rows past `rows` zero
  float* partial;            // the warps' mma accumulators [8][32][4]
  float* columns;            // s (or out, at the last layer) of the block's columns [16][ob]
  float* inv_rms;            // [16]
  float *dt_bias, *skip;     // [cb] each
};

__host__ __device__ inline size_t round_up(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

// The byte offsets of RowsShared's parts after the ring; the last is the total.
struct RowsLayout {
  size_t barriers, act, states, A, xz, u, delta_low, partial, columns, inv_rms, dt_bias, skip, total;
  __host__ __device__ RowsLayout(int slots, int row_slots, int d, int E, int R, int N, int channels,
                                 int block_columns) {
    barriers = size_t(slots) * kRowSlotBytes;
    act = round_up(barriers + (2 * kMaxSlots + 2) * sizeof(uint64_t), 128);
    const size_t phase_1 = size_t(row_slots) * (d * 2 + kRowPad), phase_2 = size_t(16) * (R + 2 * N + channels) * 4;
    states = act + round_up(max(phase_1, phase_2), 128);
    A = states + size_t(row_slots) * channels * N * 4;
    const size_t act_end = max(act + size_t(row_slots) * (max(d, E) * 2 + kRowPad), A + size_t(channels) * N * 4);
    xz = round_up(act_end, 16);
    u = xz + size_t(2 * channels) * 16 * sizeof(float);
    delta_low = round_up(u + size_t(16) * channels * 2, 16);
    partial = round_up(delta_low + size_t(16) * R * 2, 16);
    columns = partial + size_t(kConsumers) * 4 * sizeof(float);
    inv_rms = columns + size_t(16) * block_columns * sizeof(float);
    dt_bias = inv_rms + 16 * sizeof(float);
    skip = dt_bias + size_t(channels) * sizeof(float);
    total = skip + size_t(channels) * sizeof(float);
  }
};

__device__ RowsShared carve_rows(unsigned char* base, const StackArgs& p) {
  const RowsLayout at(p.slots, p.row_slots, p.d, p.E, p.R, p.N, p.channels, p.columns);
  RowsShared s;
  s.ring = base;
  s.full = reinterpret_cast<uint64_t*>(base + at.barriers);
  s.empty = s.full + kMaxSlots;
  s.staged = s.empty + kMaxSlots;
  s.states_staged = s.staged + 1;
  s.act = reinterpret_cast<__nv_bfloat16*>(base + at.act);
  s.dbc = reinterpret_cast<float*>(base + at.act);
  s.delta = s.dbc + 16 * (p.R + 2 * p.N);
  s.states = reinterpret_cast<float*>(base + at.states);
  s.A = reinterpret_cast<float*>(base + at.A);
  s.xz = reinterpret_cast<float*>(base + at.xz);
  s.u = reinterpret_cast<__nv_bfloat16*>(base + at.u);
  s.delta_low = reinterpret_cast<__nv_bfloat16*>(base + at.delta_low);
  s.partial = reinterpret_cast<float*>(base + at.partial);
  s.columns = reinterpret_cast<float*>(base + at.columns);
  s.inv_rms = reinterpret_cast<float*>(base + at.inv_rms);
  s.dt_bias = reinterpret_cast<float*>(base + at.dt_bias);
  s.skip = reinterpret_cast<float*>(base + at.skip);
  return s;
}

// Thread 0 copies `rows` rows of `length` bf16 (`src`, consecutive) into the staging buffer, whose
// rows are padded by kRowPad bytes. Called after a grid barrier: every consumer is done with the
// buffer, and the other blocks' writes of src are visible to this thread; the proxy fence makes
// both hold for the bulk copies, which are not ordinary loads.
__device__ void stage_rows(__nv_bfloat16* act, const __nv_bfloat16* src, int length, int rows, uint64_t* staged) {
  asm volatile("fence.proxy.async;" ::: "memory");
  barrier_expect_bytes(staged, unsigned(rows) * length * 2);
  for (int r = 0; r < rows; ++r)
    bulk_copy(act + size_t(r) * (length + kRowPad / 2), src + size_t(r) * length, unsigned(length) * 2, staged);
}

// A product phase against the staged activations (stride `act_stride` elements): `tiles` tiles of 8
// weight rows (tiles divides 8) in `parts` parts of `length` positions, ring chunk i holding tile
// i % tiles of part i / tiles; every warp waits for and releases every chunk. Lane (g, t) reads 16
// bytes of weight row g and of activation rows g and g + 8 at the same 8 positions, which feed two
// mma as they lie (the sum over k does not care which position goes to which mma slot).
// kEveryChunk: every warp multiplies its own slices of 32 positions, w, w + 8, … (at most
// kSlicesPerWarp), of every chunk, so it loads its activation fragments once a part for all the
// part's tiles and has a chunk's weight loads in flight together; one accumulator a tile, the
// warps' accumulators added in warp order through `scratch` (`scratch_bytes` of shared memory free
// once the product is done: the staged activations), in rounds of as many tiles as it holds.
// Otherwise warp w multiplies tile w / (8 / tiles), slices w % (8 / tiles), + 8 / tiles, … of each
// of its chunks (two accumulators, two chains of dependent mma), its group's sums added in warp
// order through `partial`. Either way the first warp of tile t's group (warp t · 8 / tiles) gets
// the sum in c and returns true.
constexpr int kSlicesPerWarp = kMaxPart / 32 / kConsumerWarps;
constexpr int kScratchPerTile = kConsumers * 4 * sizeof(float);
template <bool kEveryChunk>
__device__ __forceinline__ bool ring_product(RingReader& ring, const __nv_bfloat16* act, int act_stride, int tiles,
                                             int parts, int length, bool upper_rows, float* scratch,
                                             size_t scratch_bytes, float* partial, int warp, int lane, float (&c)[4]) {
  const int g = lane / 4, t = lane % 4, slices = length / 32;
  const auto load = [](const __nv_bfloat16* q) { return *reinterpret_cast<const uint4*>(q); };
  float acc[kConsumerWarps][4] = {};
  const int group = kConsumerWarps / tiles, own_tile = warp / group;
  if constexpr (kEveryChunk) {
    const int mine = (slices - warp + kConsumerWarps - 1) / kConsumerWarps;  // slices w, w + 8, … below `slices`
    for (int part = 0; part < parts; ++part) {
      const __nv_bfloat16* lo = act + size_t(g) * act_stride + part * length + t * 8;
      uint4 a[kSlicesPerWarp], b[kSlicesPerWarp];
#pragma unroll
      for (int j = 0; j < kSlicesPerWarp; ++j) {
        const int offset = (warp + j * kConsumerWarps) * 32;
        a[j] = j < mine ? load(lo + offset) : make_uint4(0, 0, 0, 0);
        b[j] = j < mine && upper_rows ? load(lo + size_t(8) * act_stride + offset) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int tile = 0; tile < kConsumerWarps; ++tile) {
        if (tile >= tiles) break;
        const __nv_bfloat16* w =
            reinterpret_cast<const __nv_bfloat16*>(ring.take()) + g * (length + kRowPad / 2) + t * 8;
        uint4 piece[kSlicesPerWarp];
#pragma unroll
        for (int j = 0; j < kSlicesPerWarp; ++j)
          piece[j] = j < mine ? load(w + (warp + j * kConsumerWarps) * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int j = 0; j < kSlicesPerWarp; ++j) {
          if (j < mine) {
            mma_bf16(acc[tile], a[j].x, b[j].x, a[j].y, b[j].y, piece[j].x, piece[j].y);
            mma_bf16(acc[tile], a[j].z, b[j].z, a[j].w, b[j].w, piece[j].z, piece[j].w);
          }
        }
        ring.release();
      }
    }
  } else {  // each warp on its own tile's chunks, its group's slices
    const int member = warp % group;
    float c_own[4] = {}, c_odd[4] = {};
    for (int i = 0; i < tiles * parts; ++i) {
      const unsigned char* chunk = ring.take();
      if (i % tiles == own_tile) {
        const __nv_bfloat16* w = reinterpret_cast<const __nv_bfloat16*>(chunk) + g * (length + kRowPad / 2) + t * 8;
        const __nv_bfloat16* lo = act + size_t(g) * act_stride + (i / tiles) * length + t * 8;
        const __nv_bfloat16* hi = lo + size_t(8) * act_stride;
        const auto multiply = [&](float(&into)[4], int slice) {
          const uint4 piece = load(w + slice * 32), a = load(lo + slice * 32);
          const uint4 b = upper_rows ? load(hi + slice * 32) : make_uint4(0, 0, 0, 0);
          mma_bf16(into, a.x, b.x, a.y, b.y, piece.x, piece.y);
          mma_bf16(into, a.z, b.z, a.w, b.w, piece.z, piece.w);
        };
        int slice = member;
#pragma unroll 2
        for (; slice + group < slices; slice += 2 * group) {
          multiply(c_own, slice);
          multiply(c_odd, slice + group);
        }
        if (slice < slices) multiply(c_own, slice);
      }
      ring.release();
    }
    for (int q = 0; q < 4; ++q) c[q] = c_own[q] + c_odd[q];
    *reinterpret_cast<float4*>(partial + (warp * 32 + lane) * 4) = make_float4(c[0], c[1], c[2], c[3]);
    consumers_sync();
    if (member != 0) return false;
    for (int j = 1; j < group; ++j) {
      const float4 v = *reinterpret_cast<const float4*>(partial + ((warp + j) * 32 + lane) * 4);
      c[0] += v.x, c[1] += v.y, c[2] += v.z, c[3] += v.w;
    }
    return true;
  }
  int per_round = tiles;
  while (per_round > 1 && size_t(per_round) * kScratchPerTile > scratch_bytes) per_round /= 2;
  bool holds = false;
  for (int first = 0; first < tiles; first += per_round) {
    consumers_sync();  // every warp is done with the activations, or with the round before
#pragma unroll
    for (int tile = 0; tile < kConsumerWarps; ++tile)
      if (tile >= first && tile < first + per_round)
        *reinterpret_cast<float4*>(scratch + (((tile - first) * kConsumerWarps + warp) * 32 + lane) * 4) =
            make_float4(acc[tile][0], acc[tile][1], acc[tile][2], acc[tile][3]);
    consumers_sync();
    if (warp % group == 0 && own_tile >= first && own_tile < first + per_round) {
      c[0] = c[1] = c[2] = c[3] = 0.0f;
      for (int v = 0; v < kConsumerWarps; ++v) {
        const float4 x =
            *reinterpret_cast<const float4*>(scratch + (((own_tile - first) * kConsumerWarps + v) * 32 + lane) * 4);
        c[0] += x.x, c[1] += x.y, c[2] += x.z, c[3] += x.w;
      }
      holds = true;
    }
  }
  return holds;
}

// A small product on the tensor cores: out(m, n) = Σ_k a[m][k] · w[n][k] for 16 rows of a (bf16,
// `a_stride` apart) and n_total rows of w (bf16, `length` apart; length a multiple of 16), tiles of
// 8 to the warps in turn; `store(m, n, value)` takes each of the 16 × n_total results.
template <typename Store>
__device__ __forceinline__ void small_product(const __nv_bfloat16* a, int a_stride, const __nv_bfloat16* w, int n_total,
                                              int length, int warp, int lane, Store&& store) {
  const int g = lane / 4, t = lane % 4;
  for (int tile = warp; tile * 8 < n_total; tile += kConsumerWarps) {
    float c[4] = {};
    for (int k = 0; k < length; k += 16) {
      const __nv_bfloat16* wr = w + size_t(tile * 8 + g) * length + k + 2 * t;
      const __nv_bfloat16* ar = a + size_t(g) * a_stride + k + 2 * t;
      const auto word = [](const __nv_bfloat16* q) { return *reinterpret_cast<const uint32_t*>(q); };
      mma_bf16(c, word(ar), word(ar + 8 * a_stride), word(ar + 8), word(ar + 8 * a_stride + 8), word(wr), word(wr + 8));
    }
    const int n = tile * 8 + 2 * t;
    store(g, n, c[0]);
    store(g, n + 1, c[1]);
    store(g + 8, n, c[2]);
    store(g + 8, n + 1, c[3]);
  }
}

// The block's columns of s (in s.columns) go out: s itself, bf16(s ⊙ w_norm) of the next layer and
// each row's sum of s² over them (added in column order).
__device__ void publish_columns(const StackArgs& p, const RowsShared& s, const float* norm_weight, int tid) {
  const int j0 = blockIdx.x * p.columns;
  for (int e = tid; e < p.rows * p.columns; e += kConsumers) {
    const int m = e / p.columns, j = j0 + e % p.columns;
    const float v = s.columns[e];
    p.residual[size_t(m) * p.d + j] = v;
    p.normed[size_t(m) * p.d + j] = __float2bfloat16_rn(v * norm_weight[j]);
  }
  if (tid < p.rows) {
    float squares = 0.0f;
    for (int j = 0; j < p.columns; ++j)
      squares = fmaf(s.columns[tid * p.columns + j], s.columns[tid * p.columns + j], squares);
    p.square_sums[size_t(tid) * gridDim.x + blockIdx.x] = squares;
  }
}

template <bool kEveryChunk>
__global__ void __launch_bounds__(kThreads, 1) decode_stack_rows_kernel(const __grid_constant__ StackArgs p) {
  extern __shared__ __align__(128) unsigned char shared[];
  const RowsShared s = carve_rows(shared, p);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  if (!start_ring<RowsSchedule>(p, s.ring, s.full, s.empty, s.staged, 2)) return;  // staged, states_staged

  const int b = blockIdx.x, d = p.d, E = p.E, N = p.N, R = p.R, J = R + 2 * N, cb = p.channels, M = p.rows;
  const int c0 = b * cb, j0 = b * p.columns;
  const bool upper_rows = p.row_slots > 8;
  const RowsSchedule sched(p);
  RingReader ring{s.ring, p.slot_bytes, p.slots, s.full, s.empty};
  int barrier = 0;
  unsigned staged_uses = 0;
  for (int e = tid; e < 16 * cb; e += kConsumers) s.u[e] = __float2bfloat16_rn(0.0f);
  for (int e = tid; e < 16 * R; e += kConsumers) s.delta_low[e] = __float2bfloat16_rn(0.0f);
  // Layer 0's input: s = x.
  for (int e = tid; e < M * p.columns; e += kConsumers)
    s.columns[e] = __bfloat162float(p.x[size_t(e / p.columns) * d + j0 + e % p.columns]);
  consumers_sync();
  publish_columns(p, s, p.layer[0].norm_weight, tid);

  for (int l = 0; l < p.layers; ++l) {
    const LayerArgs& w = p.layer[l];
    // Before the barrier, what no other block writes: the conv step's operands, δ biases, D, and
    // the block's SSM states with their A.
    const int kept = p.K - 1;
    float taps[kMaxConvPairs][kMaxConvWidth] = {}, history[kMaxConvPairs][kMaxConvWidth] = {},
          conv_bias[kMaxConvPairs] = {};
#pragma unroll
    for (int i = 0; i < kMaxConvPairs; ++i) {
      const int e = tid + i * kConsumers, m = e / cb, c = e % cb;
      if (e >= M * cb) break;
#pragma unroll
      for (int k = 0; k < kMaxConvWidth; ++k) {
        if (k < p.K) taps[i][k] = w.conv_weight[int64_t(c0 + c) * p.K + k];
        if (k < kept) history[i][k] = w.conv_state[(int64_t(m) * E + c0 + c) * kept + k];
      }
      conv_bias[i] = w.conv_bias ? w.conv_bias[c0 + c] : 0.0f;
    }
    if (tid < cb) {
      s.dt_bias[tid] = w.dt_bias[c0 + tid];
      s.skip[tid] = w.D[c0 + tid];
    }
    const int states = M * cb * N;
    if (tid == 0) {  // act's y of the layer before is read (publish_columns came after a sync)
      asm volatile("fence.proxy.async;" ::: "memory");
      barrier_expect_bytes(s.states_staged, unsigned(states + cb * N) * 4);
      for (int m = 0; m < M; ++m)
        bulk_copy(s.states + m * cb * N, w.ssm_state + (int64_t(m) * E + c0) * N, unsigned(cb * N) * 4,
                  s.states_staged);
      bulk_copy(s.A, w.A + int64_t(c0) * N, unsigned(cb * N) * 4, s.states_staged);
    }
    grid_sync(p.arrivals, barrier++);

    // Phase 1. Stage bf16(s ⊙ w_norm) of every row; each row's 1/rms from the blocks' sums of s².
    if (tid == 0) stage_rows(s.act, p.normed, d, p.row_slots, s.staged);
    {  // all of a thread's loads issued at once (a chain of L2 round trips otherwise)
      const int m = tid / 16, q = tid % 16;
      float part[kMaxBlocks / 16];
#pragma unroll
      for (int i = 0; i < kMaxBlocks / 16; ++i) {
        const int j = q + 16 * i;
        part[i] = m < M && j < int(gridDim.x) ? __ldcg(p.square_sums + size_t(m) * gridDim.x + j) : 0.0f;
      }
      float squares = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxBlocks / 16; ++i) squares += part[i];
      for (int offset = 8; offset > 0; offset /= 2) squares += __shfl_xor_sync(0xffffffffu, squares, offset);
      if (q == 0) s.inv_rms[m] = m < M ? rsqrtf(squares / float(d) + p.eps) : 0.0f;
    }
    barrier_wait(s.staged, staged_uses++ & 1);
    {  // The block's 2cb rows of W_in → x' (rows < cb) and z, scaled by 1/rms and rounded to bf16.
      float c[4];
      if (ring_product<kEveryChunk>(ring, s.act, d + kRowPad / 2, sched.in_tiles, sched.in_parts, sched.in_length,
                                    upper_rows, reinterpret_cast<float*>(s.act),
                                    size_t(p.row_slots) * (d * 2 + kRowPad), s.partial, warp, lane, c)) {
        const int tile = warp / (kConsumerWarps / sched.in_tiles), g = lane / 4, r = tile * 8 + 2 * (lane % 4);
        if (g < M) {
          s.xz[r * 16 + g] = bf16_round(c[0] * s.inv_rms[g]);
          s.xz[(r + 1) * 16 + g] = bf16_round(c[1] * s.inv_rms[g]);
        }
        if (g + 8 < M) {
          s.xz[r * 16 + g + 8] = bf16_round(c[2] * s.inv_rms[g + 8]);
          s.xz[(r + 1) * 16 + g + 8] = bf16_round(c[3] * s.inv_rms[g + 8]);
        }
      }
    }
    consumers_sync();
    // The conv step + SiLU of each (row, channel).
#pragma unroll
    for (int i = 0; i < kMaxConvPairs; ++i) {
      const int e = tid + i * kConsumers, m = e / cb, c = e % cb;
      if (e >= M * cb) break;
      const float x = s.xz[c * 16 + m];
      float acc = conv_bias[i], last_tap = 0.0f;
#pragma unroll
      for (int k = 0; k < kMaxConvWidth; ++k) {
        if (k < kept) acc = fmaf(taps[i][k], history[i][k], acc);
        if (k == kept) last_tap = taps[i][k];
      }
      acc = fmaf(last_tap, x, acc);
      float* state = w.conv_state + (int64_t(m) * E + c0 + c) * kept;
#pragma unroll
      for (int k = 0; k < kMaxConvWidth - 1; ++k)
        if (k < kept) state[k] = k + 1 < kept ? history[i][k + 1] : x;
      s.u[m * cb + c] = __float2bfloat16_rn(acc * sigmoid(acc));
    }
    consumers_sync();
    {  // x_proj's partial sums over the block's channels, into the fixed-point sums.
      const __nv_bfloat16* wx = reinterpret_cast<const __nv_bfloat16*>(ring.take());
      unsigned long long* sums = p.fixed_sums + size_t(l % 2) * M * J;
      small_product(s.u, cb, wx, J, cb, warp, lane, [&](int m, int j, float v) {
        if (m >= M) return;
        if (fabsf(v) < float(1 << kFixedRange))  // false for NaN too
          atomicAdd(sums + m * J + j, static_cast<unsigned long long>(llrint(double(v) * double(1ull << kFixedBits))));
        else
          atomicOr(p.fixed_sums + 2 * M * J + l % 2, 1ull);
      });
      ring.release();
    }
    grid_sync(p.arrivals, barrier++);

    // Phase 2. δ_low, B, C of every row from the sums (bf16, as x_proj stores them); block 0 then
    // clears the other parity's sums for the next layer.
    {
      const unsigned long long* sums = p.fixed_sums + size_t(l % 2) * M * J;
      const bool bad = __ldcg(p.fixed_sums + 2 * M * J + l % 2) != 0;
      unsigned long long loaded[kMaxSumsPerThread];  // all loads issued at once
#pragma unroll
      for (int i = 0; i < kMaxSumsPerThread; ++i) {
        const int e = tid + i * kConsumers;
        loaded[i] = e < M * J ? __ldcg(sums + e) : 0ull;
      }
#pragma unroll
      for (int i = 0; i < kMaxSumsPerThread; ++i) {
        const int e = tid + i * kConsumers;
        if (e >= M * J) break;
        const double sum = double(static_cast<long long>(loaded[i])) / double(1ull << kFixedBits);
        const float v = bad ? __int_as_float(0x7fc00000) : bf16_round(float(sum));
        const int m = e / J, j = e % J;
        s.dbc[m * J + j] = v;
        if (j < R) s.delta_low[m * R + j] = __float2bfloat16_rn(v);
      }
      if (b == 0)
        for (int e = tid; e <= M * J; e += kConsumers)
          p.fixed_sums[e < M * J ? size_t((l + 1) % 2) * M * J + e : 2 * M * J + (l + 1) % 2] = 0;
      consumers_sync();
    }
    {  // δ of each (row, channel) from the block's W_dt rows.
      const __nv_bfloat16* wdt = reinterpret_cast<const __nv_bfloat16*>(ring.take());
      small_product(s.delta_low, R, wdt, cb, R, warp, lane, [&](int m, int c, float v) {
        if (m < M) s.delta[m * cb + c] = softplus(v + s.dt_bias[c]);
      });
      ring.release();
    }
    consumers_sync();
    barrier_wait(s.states_staged, l & 1);
    // The state update. A thread keeps one (channel, state) pair (of P = cb·N; the N states of a
    // channel on N adjacent lanes) for every row it updates: rows m = first, first + step, …, eight
    // at a time, each group's shared-memory operands loaded before any of its results is stored.
    // (Row by row, each row's stores before the next row's loads, a group of 4 rows took ≈ 0.85 µs
    // at every shape: docs/perf/cuda_model.md, session 29.)
    {
      constexpr int kRowsAtOnce = 8;
      const int P = cb * N, per_row = min(P, kConsumers), step = kConsumers / per_row;
      // Read from the parameters once: the compiler reloads them after every store otherwise.
      float* const state_out = w.ssm_state + int64_t(c0) * N;
      __nv_bfloat16* const y_out = p.y + c0;
      for (int q = tid % per_row; q < P; q += per_row) {
        const int c = q / N, n = q % N;
        const float a = s.A[q] * kLog2e, skip = s.skip[c];
        for (int m0 = tid / per_row; m0 < M; m0 += kRowsAtOnce * step) {
          float delta[kRowsAtOnce], u[kRowsAtOnce], state[kRowsAtOnce], B[kRowsAtOnce], C[kRowsAtOnce], z[kRowsAtOnce];
#pragma unroll
          for (int r = 0; r < kRowsAtOnce; ++r) {
            const int m = min(m0 + r * step, M - 1);  // past the last row: the last again, not stored
            delta[r] = s.delta[m * cb + c];
            u[r] = __bfloat162float(s.u[m * cb + c]);
            state[r] = s.states[m * P + q];
            B[r] = s.dbc[m * J + R + n];
            C[r] = s.dbc[m * J + R + N + n];
            z[r] = s.xz[(cb + c) * 16 + m];
          }
          float y[kRowsAtOnce];
#pragma unroll
          for (int r = 0; r < kRowsAtOnce; ++r) {
            state[r] = fmaf(exp2f(delta[r] * a), state[r], delta[r] * B[r] * u[r]);
            y[r] = C[r] * state[r];
          }
          // y of the 8 rows summed over the channel's N lanes (N ≥ 8) by halving exchanges: at
          // each of the first three levels a lane keeps half of its rows and sends the other half
          // to its partner, so the lanes end with one row each (row = the three bits 4·b(N/2) +
          // 2·b(N/4) + b(N/8) of n): 7 shuffles and N/8 − 1 plain levels instead of 8 · log2 N,
          // and the 8 rows' gates and y stores run on different lanes at once.
          const bool upper_4 = n & (N / 2), upper_2 = n & (N / 4), upper_1 = n & (N / 8);
          auto pick = [&](const float(&v)[kRowsAtOnce]) {  // v[row of this lane], without indexing
            float kept_4[4], kept_2[2];
#pragma unroll
            for (int i = 0; i < 4; ++i) kept_4[i] = upper_4 ? v[i + 4] : v[i];
#pragma unroll
            for (int i = 0; i < 2; ++i) kept_2[i] = upper_2 ? kept_4[i + 2] : kept_4[i];
            return upper_1 ? kept_2[1] : kept_2[0];
          };
          float four[4], two[2];
#pragma unroll
          for (int i = 0; i < 4; ++i)
            four[i] = (upper_4 ? y[i + 4] : y[i]) + __shfl_xor_sync(0xffffffffu, upper_4 ? y[i] : y[i + 4], N / 2);
#pragma unroll
          for (int i = 0; i < 2; ++i)
            two[i] = (upper_2 ? four[i + 2] : four[i]) +
                     __shfl_xor_sync(0xffffffffu, upper_2 ? four[i] : four[i + 2], N / 4);
          float sum = (upper_1 ? two[1] : two[0]) + __shfl_xor_sync(0xffffffffu, upper_1 ? two[0] : two[1], N / 8);
          for (int offset = N / 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
#pragma unroll
          for (int r = 0; r < kRowsAtOnce; ++r) {
            const int m = m0 + r * step;
            if (m >= M) break;
            state_out[int64_t(m) * E * N + q] = state[r];
          }
          const int row = 4 * upper_4 + 2 * upper_2 + upper_1, m = m0 + row * step;
          if (m < M && (n & (N / 8 - 1)) == 0) {
            const float zr = pick(z);
            y_out[size_t(m) * E + c] = __float2bfloat16_rn(fmaf(skip, pick(u), sum) * (zr * sigmoid(zr)));
          }
        }
      }
    }
    grid_sync(p.arrivals, barrier++);

    // Phase 3. Stage y of every row; the block's column tiles of W_out against it; then s of the
    // next layer (or, after the last, the output) for the block's columns.
    if (tid == 0) stage_rows(s.act, p.y, E, p.row_slots, s.staged);
    barrier_wait(s.staged, staged_uses++ & 1);
    const bool last = l + 1 == p.layers;
    {
      float c[4];
      if (ring_product<false>(ring, s.act, E + kRowPad / 2, sched.out_tiles, sched.out_parts, sched.out_length,
                              upper_rows, reinterpret_cast<float*>(s.act), size_t(p.row_slots) * (E * 2 + kRowPad),
                              s.partial, warp, lane, c)) {
        const int tile = warp / (kConsumerWarps / sched.out_tiles), g = lane / 4, jj = tile * 8 + 2 * (lane % 4);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int m = g + (q / 2) * 8, j = jj + q % 2;
          if (m >= M) continue;
          const float out = bf16_round(c[q]);
          if (last)
            p.out[size_t(m) * d + j0 + j] = __float2bfloat16_rn(out);
          else
            s.columns[m * p.columns + j] = out + p.residual[size_t(m) * d + j0 + j];
        }
      }
    }
    consumers_sync();
    if (!last) publish_columns(p, s, p.layer[l + 1].norm_weight, tid);
  }
  // The last block out resets the counter for the next launch.
  consumers_sync();
  if (tid == 0 && atomicAdd(p.arrivals, 1u) == unsigned(barrier + 1) * gridDim.x - 1) atomicExch(p.arrivals, 0u);
}

// How the stack splits over blocks: the fewest channels a block (a multiple of 8) that leaves at
// most one block per multiprocessor and also splits d evenly; 0 when none does.
int channels_per_block(int64_t E, int64_t d) {
  const int64_t sms = multiprocessor_count();
  for (int64_t cb = 8; cb <= E; cb += 8)
    if (E % cb == 0 && E / cb <= sms && d % (E / cb) == 0) return int(cb);
  return 0;
}

int shared_limit() {
  int device = 0, limit = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
  return limit;
}

// The mma rows that `rows` sequences take: 8 (the lower half only) or 16.
int rows_taken(int rows) { return rows <= 8 ? 8 : 16; }

// The ring slots of the several-rows kernel: what shared memory holds beside the staged activations.
int rows_ring_slots(int rows, int d, int E, int R, int N, int channels, int columns) {
  const size_t fixed = RowsLayout(0, rows_taken(rows), d, E, R, N, channels, columns).total;
  return int(std::min<size_t>(kMaxSlots, (size_t(shared_limit()) - fixed) / kRowSlotBytes));
}

// One cooperative launch of `kernel` with one block per `p`'s channel group.
void launch_cooperative(void (*kernel)(StackArgs), const char* name, const StackArgs& p, size_t bytes) {
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), name);
  cudaLaunchAttribute cooperative{};
  cooperative.id = cudaLaunchAttributeCooperative;
  cooperative.val.cooperative = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(unsigned(p.E / p.channels));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = bytes;
  config.stream = cudaStreamPerThread;
  config.attrs = &cooperative;
  config.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&config, kernel, p), name);
}

}  // namespace

Tensor decode_stack_x_proj_blocks(const Tensor& x_proj, int64_t d) {
  const int64_t J = x_proj.size(0), E = x_proj.size(1);
  const int cb = x_proj.dtype() == DType::bf16 && x_proj.is_contiguous() ? channels_per_block(E, d) : 0;
  if (cb == 0) return {};
  const int64_t blocks = E / cb;
  Tensor packed = Tensor::empty({blocks, J, cb}, DType::bf16, Device::cuda);
  for (int64_t b = 0; b < blocks; ++b)
    check_cuda(cudaMemcpy2DAsync(static_cast<char*>(packed.raw()) + b * J * cb * 2, size_t(cb) * 2,
                                 static_cast<const char*>(x_proj.raw()) + b * cb * 2, size_t(E) * 2, size_t(cb) * 2,
                                 size_t(J), cudaMemcpyDeviceToDevice, cudaStreamPerThread),
               "decode_stack_x_proj_blocks");
  return packed;
}

bool decode_stack_pays(const Tensor& x, const std::vector<DecodeStackLayer>& layers) {
  const int64_t d = x.size(1), E = layers[0].dt_bias.size(0), R = layers[0].dt_proj.size(1), N = layers[0].A.size(1);
  const int64_t J = R + 2 * N, cb = channels_per_block(E, d), columns = d / (E / cb);
  const bool stream_bound = (2 * cb * d + J * cb + cb * R + columns * E) * 2 >= kStreamBoundBlockBytes;
  return stream_bound && (x.size(0) == 1 || rows_ring_slots(int(x.size(0)), int(d), int(E), int(R), int(N), int(cb),
                                                            int(columns)) >= kRowsSlotsThatPay);
}

bool decode_stack_fits(const Tensor& x, const std::vector<DecodeStackLayer>& layers) {
  const DecodeStackLayer& first = layers[0];
  const int64_t d = x.size(1), E = first.dt_bias.size(0), N = first.A.size(1), R = first.dt_proj.size(1);
  const int64_t K = first.conv_weight.size(-1), J = R + 2 * N;
  if (layers.size() > size_t(kMaxLayers) || x.dtype() != DType::bf16 || d % kPiece != 0 || E % kPiece != 0 ||
      R % 8 != 0 || N < 2 || N > 32 || (N & (N - 1)) != 0 || K < 2 || K > kMaxConvWidth || J > kConsumers ||
      !aligned16(x.raw()))
    return false;
  const int cb = channels_per_block(E, d);
  const int64_t rows = x.size(0);
  if (cb == 0 || cb > 32 || rows > kRowsMax) return false;
  if (rows == 1 && (cb * N > 4 * kConsumers || int64_t(cb) * R * 2 > kSlotBytes || J * int64_t(cb) * 2 > kSlotBytes ||
                    2 * d > kSlotBytes || 2 * E > kSlotBytes))
    return false;
  const int64_t columns = d / (E / cb);
  if (rows > 1 && (cb % 16 != 0 || N < 8 || columns % 8 != 0 || kConsumerWarps % (columns / 8) != 0 || R % 16 != 0 ||
                   J % 8 != 0 || product_parts(int(d)) == 0 || product_parts(int(E)) == 0 ||
                   rows * cb > kMaxConvPairs * kConsumers || rows * J > kMaxSumsPerThread * kConsumers ||
                   E / cb > kMaxBlocks || J * int64_t(cb) * 2 > kRowSlotBytes || int64_t(cb) * R * 2 > kRowSlotBytes ||
                   (cb * N >= kConsumers ? cb * N % kConsumers : kConsumers % (cb * N)) != 0))
    return false;
  for (const DecodeStackLayer& l : layers) {
    for (const Tensor* t : {&l.in_proj, &l.x_proj, &l.dt_proj, &l.out_proj})
      if (t->dtype() != DType::bf16 || !t->is_contiguous() || !aligned16(t->raw())) return false;
    for (const Tensor* t : {&l.norm_weight, &l.conv_weight, &l.dt_bias, &l.A, &l.D, &l.conv_state, &l.ssm_state})
      if (t->dtype() != DType::f32 || !t->is_contiguous()) return false;
    if (l.conv_bias.defined() && (l.conv_bias.dtype() != DType::f32 || !l.conv_bias.is_contiguous())) return false;
  }
  const size_t bytes =
      rows == 1 ? shared_bytes(2, int(d), int(E), cb, int(J))
                : RowsLayout(2, rows_taken(int(rows)), int(d), int(E), int(R), int(N), cb, int(columns)).total;
  return bytes <= size_t(shared_limit());
}

DecodeStackOutputs decode_stack_step(const Tensor& x, const std::vector<DecodeStackLayer>& layers, float eps) {
  const DecodeStackLayer& first = layers[0];
  StackArgs p{};
  p.layers = int(layers.size());
  p.rows = int(x.size(0));
  p.d = int(x.size(1));
  p.E = int(first.dt_bias.size(0));
  p.N = int(first.A.size(1));
  p.R = int(first.dt_proj.size(1));
  p.K = int(first.conv_weight.size(-1));
  p.channels = channels_per_block(p.E, p.d);
  const int blocks = p.E / p.channels, J = p.R + 2 * p.N;
  p.columns = p.d / blocks;
  p.eps = eps;
  for (size_t l = 0; l < layers.size(); ++l) {
    const DecodeStackLayer& in = layers[l];
    LayerArgs& a = p.layer[l];
    a.in_proj = static_cast<__nv_bfloat16*>(in.in_proj.raw());
    a.x_proj = static_cast<__nv_bfloat16*>(in.x_proj.raw());
    a.dt_proj = static_cast<__nv_bfloat16*>(in.dt_proj.raw());
    a.out_proj = static_cast<__nv_bfloat16*>(in.out_proj.raw());
    a.norm_weight = in.norm_weight.data<float>();
    a.conv_weight = in.conv_weight.data<float>();
    a.conv_bias = data_or_null<float>(in.conv_bias);
    a.dt_bias = in.dt_bias.data<float>();
    a.A = in.A.data<float>();
    a.D = in.D.data<float>();
    a.conv_state = in.conv_state.data<float>();
    a.ssm_state = in.ssm_state.data<float>();
  }
  DecodeStackOutputs result{Tensor::empty({p.rows, p.d}, DType::bf16, Device::cuda), {}};
  Tensor arrivals = Tensor::zeros({1}, DType::i32, Device::cuda);
  p.x = static_cast<__nv_bfloat16*>(x.raw());
  p.out = static_cast<__nv_bfloat16*>(result.out.raw());
  p.arrivals = reinterpret_cast<unsigned*>(arrivals.data<int32_t>());
  const size_t shared_available = size_t(shared_limit());
  if (p.rows == 1) {
    p.held_rows = p.d <= kHeldPieces * kPiece ? std::min(p.channels, kHeldRowsPerWarp * kConsumerWarps) : 0;
    p.slot_bytes = kSlotBytes;
    p.slots =
        int(std::min<size_t>(kMaxSlots, (shared_available - shared_bytes(0, p.d, p.E, p.channels, J)) / kSlotBytes));
    Tensor residual = Tensor::empty({2, p.d}, DType::f32, Device::cuda);
    Tensor fixed_sums = Tensor::zeros({2 * J + 2}, DType::i64, Device::cuda);
    Tensor y = Tensor::empty({p.E}, DType::bf16, Device::cuda);
    p.y = static_cast<__nv_bfloat16*>(y.raw());
    p.residual = residual.data<float>();
    p.fixed_sums = reinterpret_cast<unsigned long long*>(fixed_sums.data<int64_t>());
    launch_cooperative(decode_stack_kernel, "decode_stack_kernel", p, shared_bytes(p.slots, p.d, p.E, p.channels, J));
    result.residual = residual.slice(size_t(p.layers - 1) % 2, size_t(p.layers - 1) % 2 + 1);
    return result;
  }
  p.row_slots = rows_taken(p.rows);
  p.slot_bytes = kRowSlotBytes;
  p.slots = rows_ring_slots(p.rows, p.d, p.E, p.R, p.N, p.channels, p.columns);
  result.residual = Tensor::empty({p.rows, p.d}, DType::f32, Device::cuda);
  // Rows past `rows` of the staged activations stay zero: the mma's rows that no sequence fills.
  Tensor normed = Tensor::zeros({p.row_slots, p.d}, DType::bf16, Device::cuda);
  Tensor y = Tensor::zeros({p.row_slots, p.E}, DType::bf16, Device::cuda);
  Tensor square_sums = Tensor::empty({kRowsMax, blocks}, DType::f32, Device::cuda);
  Tensor fixed_sums = Tensor::zeros({2 * p.rows * J + 2}, DType::i64, Device::cuda);
  p.residual = result.residual.data<float>();
  p.normed = static_cast<__nv_bfloat16*>(normed.raw());
  p.y = static_cast<__nv_bfloat16*>(y.raw());
  p.square_sums = square_sums.data<float>();
  p.fixed_sums = reinterpret_cast<unsigned long long*>(fixed_sums.data<int64_t>());
  // The in_proj with 8 tiles (a warp a tile) takes the every-chunk product; other shapes a kernel
  // without it, which needs fewer registers.
  const bool every_chunk = RowsSchedule(p).in_tiles == kConsumerWarps;
  launch_cooperative(every_chunk ? decode_stack_rows_kernel<true> : decode_stack_rows_kernel<false>,
                     "decode_stack_rows_kernel", p,
                     RowsLayout(p.slots, p.row_slots, p.d, p.E, p.R, p.N, p.channels, p.columns).total);
  return result;
}

}  // namespace mamba::ops::cuda

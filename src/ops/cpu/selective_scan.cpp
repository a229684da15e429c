// CPU selective scan: fused forward, chunk-recomputing backward and the decode step.
//
// Work items are (sequence b, block of 16 channels). A block's state h[n] for every n is one
// 16-lane vector per state, so the forward walks the positions once with the whole state in
// registers and never stores the expanded [batch, L, D, N] tensor. exp(δ'·A) uses the vectorised
// 2^x of scan_simd.h with log2(e) folded into A once per block.
//
// The backward keeps one state per chunk of kChunk positions: a forward sweep saves the state at
// every chunk start; then, last chunk first, the chunk's states and decays are recomputed into a
// [kChunk + 1, N, 16] buffer (about 256 KiB for N = 16, so it stays in L2) and the reverse-time
// recurrence of ops/ref/selective_scan.cpp runs over it. Sums across channels (dB, dC) and
// across sequences (dA, dD, ddelta_bias) go into per-range partials of parallel_for, added in
// range order afterwards, so results are deterministic at a fixed thread count.
#include "ops/selective_scan.h"

#include <algorithm>
#include <vector>

#include "core/threads.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/scan_simd.h"
#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

namespace {

using simd::kLanes;
using simd::Vec16;

constexpr int64_t kMaxStates = 256;  // bounds the per-block arrays kept on the stack
constexpr int64_t kChunk = 128;
constexpr float kLog2e = 1.44269504088896341f;
// Rows of consecutive positions are D elements apart (usually more than a page), which hardware
// prefetchers do not follow; the kernels prefetch this many positions ahead themselves.
constexpr int64_t kPrefetchAhead = 8;

// Raw pointers of the inputs. T is float or uint16_t (bfloat16 bits); optional inputs are null.
template <typename T>
struct Scan {
  int64_t batch = 0, length = 0, dim = 0, n_states = 0;
  const T *u = nullptr, *delta = nullptr, *B = nullptr, *C = nullptr, *z = nullptr;
  const float *A = nullptr, *D = nullptr, *delta_bias = nullptr, *initial_state = nullptr;
  const int32_t* lengths = nullptr;
  bool softplus = false;

  int64_t blocks() const { return (dim + kLanes - 1) / kLanes; }
  int64_t length_of(int64_t b) const { return lengths ? lengths[b] : length; }
  size_t token(int64_t b, int64_t t) const { return size_t((b * length + t) * dim); }
  size_t row(int64_t b, int64_t t) const { return size_t((b * length + t) * n_states); }
};

template <typename P>
const P* optional_data(const Tensor& t) {
  return t.defined() ? t.data<P>() : nullptr;
}

void require_f32(const Tensor& t, const char* name) {
  if (t.defined()) check_dtype(t, DType::f32, name);
}

template <typename T>
Scan<T> make_scan(const ScanInputs& in, const char* op) {
  MAMBA_CHECK(in.u.device() == Device::cpu, op, ": u must be a CPU tensor, got ", device_name(in.u.device()));
  MAMBA_CHECK(in.u.dtype() == DType::f32 || in.u.dtype() == DType::bf16, op, ": u must be f32 or bf16, got ",
              dtype_name(in.u.dtype()));
  MAMBA_CHECK(in.A.size(1) <= kMaxStates, op, ": at most ", kMaxStates, " states are supported, A has ", in.A.size(1));
  require_f32(in.A, "selective scan: A");
  require_f32(in.D, "selective scan: D");
  require_f32(in.delta_bias, "selective scan: delta_bias");
  require_f32(in.initial_state, "selective scan: initial_state");
  Scan<T> s;
  s.batch = in.u.size(0);
  s.length = in.u.ndim() == 3 ? in.u.size(1) : 1;
  s.dim = in.u.size(-1);
  s.n_states = in.A.size(1);
  s.u = in.u.data<T>();
  s.delta = in.delta.data<T>();
  s.B = in.B.data<T>();
  s.C = in.C.data<T>();
  s.z = optional_data<T>(in.z);
  s.A = in.A.data<float>();
  s.D = optional_data<float>(in.D);
  s.delta_bias = optional_data<float>(in.delta_bias);
  s.initial_state = optional_data<float>(in.initial_state);
  s.lengths = optional_data<int32_t>(in.lengths);
  s.softplus = in.delta_softplus;
  return s;
}

// v[n][lane] = src[lane·N + n] for the block's lanes, 0 elsewhere: a [16 channels, N] slice of a
// channel-major [D, N] array turned into one vector per state.
void load_transposed(const float* src, int64_t N, int count, Vec16* v) {
  for (int64_t n = 0; n < N; ++n) {
    v[n] = Vec16{};
    for (int lane = 0; lane < count; ++lane) v[n][lane] = src[lane * N + n];
  }
}

void store_transposed(float* dst, int64_t N, int count, const Vec16* v) {
  for (int64_t n = 0; n < N; ++n)
    for (int lane = 0; lane < count; ++lane) dst[lane * N + n] = v[n][lane];
}

void add_transposed(float* dst, int64_t N, int count, const Vec16* v) {
  for (int64_t n = 0; n < N; ++n)
    for (int lane = 0; lane < count; ++lane) dst[lane * N + n] += v[n][lane];
}

// A row of B or C as float32: f32 rows are used in place, bf16 rows are widened into `scratch`.
const float* float_row(const float* src, int64_t, float*) { return src; }
const float* float_row(const uint16_t* src, int64_t n, float* scratch) {
  for (int64_t i = 0; i < n; ++i) scratch[i] = bf16_to_f32(src[i]);
  return scratch;
}

// row[n] += Σ_lanes p[n], 16 states at a time by the transposing tree.
void add_lane_sums(const Vec16* p, int64_t N, float* row) {
  int64_t n = 0;
  for (; n + kLanes <= N; n += kLanes)
    simd::store(row + n, simd::load(row + n, kLanes) + simd::transpose_sum(p + n), kLanes);
  for (; n < N; ++n) row[n] += simd::reduce_add(p[n]);
}

// Per-block constants and the per-position inputs shared by the forward and the backward.
template <typename T, int kN>
struct Block {
  static constexpr int64_t kCapacity = kN ? kN : kMaxStates;
  const Scan<T>& s;
  int64_t b, d0, N;
  int count;
  Vec16 A_log2e[kCapacity];  // A·log2(e), so exp(δ'·A) = 2^(δ'·A_log2e)
  Vec16 D, bias;
  float b_scratch[kCapacity], c_scratch[kCapacity];

  Block(const Scan<T>& scan, int64_t item) : s(scan) {
    b = item / s.blocks();
    d0 = (item % s.blocks()) * kLanes;
    N = kN ? kN : s.n_states;
    count = int(std::min<int64_t>(kLanes, s.dim - d0));
    load_transposed(s.A + d0 * N, N, count, A_log2e);
    for (int64_t n = 0; n < N; ++n) A_log2e[n] *= kLog2e;
    D = s.D ? simd::load(s.D + d0, count) : Vec16{};
    bias = s.delta_bias ? simd::load(s.delta_bias + d0, count) : Vec16{};
  }
  size_t at(int64_t t) const { return s.token(b, t) + size_t(d0); }
  // Prefetches this block's part of row t of the given per-token tensors.
  template <typename... P>
  void prefetch(int64_t t, const P*... rows) const {
    if (t >= 0 && t < s.length) (__builtin_prefetch(rows + at(t)), ...);
  }
  [[gnu::always_inline]] Vec16 u(int64_t t) const { return simd::load(s.u + at(t), count); }
  [[gnu::always_inline]] Vec16 delta_input(int64_t t) const { return simd::load(s.delta + at(t), count) + bias; }
  [[gnu::always_inline]] Vec16 delta_prime(Vec16 x) const { return s.softplus ? simd::softplus(x) : x; }
  const float* B_row(int64_t t) { return float_row(s.B + s.row(b, t), N, b_scratch); }
  const float* C_row(int64_t t) { return float_row(s.C + s.row(b, t), N, c_scratch); }
  void load_initial_state(Vec16* h) const {
    if (s.initial_state)
      load_transposed(s.initial_state + (b * s.dim + d0) * N, N, count, h);
    else
      std::fill(h, h + N, Vec16{});
  }
};

template <typename T, int kN>
void forward_block(const Scan<T>& s, int64_t item, T* out, float* last_state) {
  Block<T, kN> blk(s, item);
  const int64_t N = blk.N, len = s.length_of(blk.b);
  Vec16 h[Block<T, kN>::kCapacity];
  blk.load_initial_state(h);
  for (int64_t t = 0; t < len; ++t) {
    blk.prefetch(t + kPrefetchAhead, s.u, s.delta, static_cast<const T*>(out));
    if (s.z) blk.prefetch(t + kPrefetchAhead, s.z);
    const Vec16 u = blk.u(t), dp = blk.delta_prime(blk.delta_input(t)), dpu = dp * u;
    const float *Bt = blk.B_row(t), *Ct = blk.C_row(t);
    Vec16 y = blk.D * u;
#pragma GCC unroll 16
    for (int64_t n = 0; n < N; ++n) {
      h[n] = simd::fma(simd::exp2(dp * blk.A_log2e[n]), h[n], dpu * Bt[n]);
      y = simd::fma(h[n], simd::broadcast(Ct[n]), y);
    }
    if (s.z) {
      const Vec16 z = simd::load(s.z + blk.at(t), blk.count);
      y *= z * simd::sigmoid(z);
    }
    simd::store(out + blk.at(t), y, blk.count);
  }
  for (int64_t t = len; t < s.length; ++t) simd::store(out + blk.at(t), Vec16{}, blk.count);
  store_transposed(last_state + (blk.b * s.dim + blk.d0) * N, N, blk.count, h);
}

template <typename T>
struct GradPointers {
  const T* dout = nullptr;
  const float* dlast_state = nullptr;
  T *du = nullptr, *ddelta = nullptr, *dz = nullptr;
  float* dinitial_state = nullptr;
};

// Buffers of one parallel_for range, reused by its items.
struct BackwardScratch {
  std::vector<Vec16> chunk_starts;  // [chunks, N]: the state before each chunk
  std::vector<Vec16> states;        // [kChunk + 1, N]: the state before the chunk, then after each position
  std::vector<Vec16> decays;        // [kChunk, N]: exp(δ'·A) per position
  std::vector<Vec16> delta_primes;  // [kChunk]
  std::vector<Vec16> ys;            // [kChunk]: y before the gate, for dz
};

// This range's share of the gradients summed over channels or sequences.
struct Partials {
  std::vector<float> dA, dD, ddelta_bias, dB, dC;
};

template <typename T, int kN>
void backward_block(const Scan<T>& s, const GradPointers<T>& gp, int64_t item, BackwardScratch& scratch,
                    Partials& partial) {
  Block<T, kN> blk(s, item);
  constexpr int64_t kCapacity = Block<T, kN>::kCapacity;
  const int64_t N = blk.N, len = s.length_of(blk.b), chunks = (len + kChunk - 1) / kChunk;
  const int count = blk.count;
  Vec16 A[kCapacity];
  load_transposed(s.A + blk.d0 * N, N, count, A);

  // Forward sweep keeping the state at each chunk start (the last chunk is recomputed below).
  scratch.chunk_starts.resize(size_t(std::max<int64_t>(chunks, 1) * N));
  scratch.states.resize(size_t((kChunk + 1) * N));
  scratch.decays.resize(size_t(kChunk * N));
  scratch.delta_primes.resize(kChunk);
  scratch.ys.resize(kChunk);
  Vec16 h[kCapacity];
  blk.load_initial_state(h);
  for (int64_t t = 0; t < len; ++t) {
    if (t % kChunk == 0) {
      std::copy(h, h + N, &scratch.chunk_starts[size_t(t / kChunk * N)]);
      if (t / kChunk == chunks - 1) break;
    }
    blk.prefetch(t + kPrefetchAhead, s.u, s.delta);
    const Vec16 dp = blk.delta_prime(blk.delta_input(t)), dpu = dp * blk.u(t);
    const float* Bt = blk.B_row(t);
#pragma GCC unroll 16
    for (int64_t n = 0; n < N; ++n) h[n] = simd::fma(simd::exp2(dp * blk.A_log2e[n]), h[n], dpu * Bt[n]);
  }

  // g[n] = dL/dh_t[n], carried backwards from dlast_state.
  Vec16 g[kCapacity], dA_sum[kCapacity], pB[kCapacity], pC[kCapacity];
  if (gp.dlast_state)
    load_transposed(gp.dlast_state + (blk.b * s.dim + blk.d0) * N, N, count, g);
  else
    std::fill(g, g + N, Vec16{});
  std::fill(dA_sum, dA_sum + N, Vec16{});
  Vec16 dD_sum{}, dbias_sum{};
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk, t1 = std::min(len, t0 + kChunk);
    Vec16* states = scratch.states.data();
    Vec16* decays = scratch.decays.data();
    std::copy_n(&scratch.chunk_starts[size_t(c * N)], N, states);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t - t0;
      blk.prefetch(t + kPrefetchAhead, s.u, s.delta);
      const Vec16 u = blk.u(t), dp = blk.delta_prime(blk.delta_input(t)), dpu = dp * u;
      const float *Bt = blk.B_row(t), *Ct = blk.C_row(t);
      Vec16 y = blk.D * u;
#pragma GCC unroll 16
      for (int64_t n = 0; n < N; ++n) {
        const Vec16 a = simd::exp2(dp * blk.A_log2e[n]);
        const Vec16 hn = simd::fma(a, states[j * N + n], dpu * Bt[n]);
        decays[j * N + n] = a;
        states[(j + 1) * N + n] = hn;
        y = simd::fma(hn, simd::broadcast(Ct[n]), y);
      }
      scratch.delta_primes[size_t(j)] = dp;
      scratch.ys[size_t(j)] = y;
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t j = t - t0;
      const size_t at = blk.at(t);
      blk.prefetch(t - kPrefetchAhead, gp.dout, static_cast<const T*>(gp.du), static_cast<const T*>(gp.ddelta));
      if (s.z) blk.prefetch(t - kPrefetchAhead, s.z, static_cast<const T*>(gp.dz));
      const Vec16 u = blk.u(t), dp = scratch.delta_primes[size_t(j)], dpu = dp * u;
      const float *Bt = blk.B_row(t), *Ct = blk.C_row(t);
      const Vec16 dout = simd::load(gp.dout + at, count);
      Vec16 dy = dout;
      if (s.z) {
        const Vec16 z = simd::load(s.z + at, count), sig = simd::sigmoid(z);
        simd::store(gp.dz + at, dout * scratch.ys[size_t(j)] * sig * (1.0f + z * (1.0f - sig)), count);
        dy = dout * z * sig;
      }
      Vec16 du = dy * blk.D, ddp{}, gB{};
      dD_sum = simd::fma(dy, u, dD_sum);
#pragma GCC unroll 16
      for (int64_t n = 0; n < N; ++n) {
        const Vec16 a = decays[j * N + n];
        g[n] = simd::fma(dy, simd::broadcast(Ct[n]), g[n]);
        pC[n] = dy * states[(j + 1) * N + n];
        const Vec16 g_decayed_h = g[n] * (a * states[j * N + n]);
        dA_sum[n] = simd::fma(g_decayed_h, dp, dA_sum[n]);
        ddp = simd::fma(g_decayed_h, A[n], ddp);
        gB = simd::fma(g[n], simd::broadcast(Bt[n]), gB);
        pB[n] = g[n] * dpu;
        g[n] *= a;
      }
      ddp = simd::fma(gB, u, ddp);
      du = simd::fma(gB, dp, du);
      // softplus'(x) = sigmoid(x), which is 1 in float32 past the x > 20 threshold.
      const Vec16 dx = s.softplus ? ddp * simd::sigmoid(blk.delta_input(t)) : ddp;
      dbias_sum += dx;
      simd::store(gp.du + at, du, count);
      simd::store(gp.ddelta + at, dx, count);
      add_lane_sums(pB, N, &partial.dB[s.row(blk.b, t)]);
      add_lane_sums(pC, N, &partial.dC[s.row(blk.b, t)]);
    }
  }
  for (int64_t t = len; t < s.length; ++t) {
    simd::store(gp.du + blk.at(t), Vec16{}, count);
    simd::store(gp.ddelta + blk.at(t), Vec16{}, count);
    if (gp.dz) simd::store(gp.dz + blk.at(t), Vec16{}, count);
  }
  if (gp.dinitial_state) store_transposed(gp.dinitial_state + (blk.b * s.dim + blk.d0) * N, N, count, g);
  add_transposed(&partial.dA[size_t(blk.d0 * N)], N, count, dA_sum);
  for (int lane = 0; lane < count; ++lane) {
    partial.dD[size_t(blk.d0 + lane)] += dD_sum[lane];
    partial.ddelta_bias[size_t(blk.d0 + lane)] += dbias_sum[lane];
  }
}

// Σ over ranges (in range order) of one partial, as a tensor of `shape` and `dtype`.
Tensor sum_partials(const std::vector<Partials>& partials, std::vector<float> Partials::*field, const Shape& shape,
                    DType dtype) {
  Tensor total = Tensor::empty(shape, DType::f32);
  float* dst = total.data<float>();
  parallel_for(total.numel(), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      float sum = 0;
      for (const Partials& p : partials) sum += (p.*field)[size_t(i)];
      dst[i] = sum;
    }
  });
  return dtype == DType::f32 ? total : total.to(dtype);
}

template <typename T>
ScanOutputs forward(const ScanInputs& in) {
  const Scan<T> s = make_scan<T>(in, "cpu::selective_scan_forward");
  ScanOutputs result{
      Tensor::empty(in.u.shape(), in.u.dtype()), Tensor::empty({s.batch, s.dim, s.n_states}, DType::f32), {}};
  T* out = result.out.data<T>();
  float* last = result.last_state.data<float>();
  auto kernel = s.n_states == 16 ? &forward_block<T, 16> : &forward_block<T, 0>;
  parallel_for(s.batch * s.blocks(), [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) kernel(s, item, out, last);
  });
  return result;
}

template <typename T>
ScanGrads backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state) {
  const Scan<T> s = make_scan<T>(in, "cpu::selective_scan_backward");
  require_f32(dlast_state, "selective scan backward: dlast_state");
  const DType dtype = in.u.dtype();
  ScanGrads grads;
  grads.du = Tensor::empty(in.u.shape(), dtype);
  grads.ddelta = Tensor::empty(in.u.shape(), dtype);
  if (in.z.defined()) grads.dz = Tensor::empty(in.u.shape(), dtype);
  if (in.initial_state.defined()) grads.dinitial_state = Tensor::empty(in.initial_state.shape(), DType::f32);
  GradPointers<T> gp;
  gp.dout = dout.data<T>();
  gp.dlast_state = optional_data<float>(dlast_state);
  gp.du = grads.du.data<T>();
  gp.ddelta = grads.ddelta.data<T>();
  gp.dz = grads.dz.defined() ? grads.dz.data<T>() : nullptr;
  gp.dinitial_state = grads.dinitial_state.defined() ? grads.dinitial_state.data<float>() : nullptr;

  const int64_t items = s.batch * s.blocks();
  const int ranges = int(std::min<int64_t>(num_threads(), std::max<int64_t>(items, 1)));
  const size_t rows = size_t(s.batch * s.length * s.n_states);
  std::vector<Partials> partials(static_cast<size_t>(ranges));
  for (Partials& p : partials) {
    p.dA.assign(size_t(s.dim * s.n_states), 0.0f);
    p.dD.assign(size_t(s.dim), 0.0f);
    p.ddelta_bias.assign(size_t(s.dim), 0.0f);
    p.dB.assign(rows, 0.0f);
    p.dC.assign(rows, 0.0f);
  }
  std::vector<BackwardScratch> scratch(static_cast<size_t>(ranges));
  auto kernel = s.n_states == 16 ? &backward_block<T, 16> : &backward_block<T, 0>;
  parallel_for(items, ranges, [&](int64_t begin, int64_t end, int range) {
    for (int64_t item = begin; item < end; ++item) kernel(s, gp, item, scratch[size_t(range)], partials[size_t(range)]);
  });
  grads.dA = sum_partials(partials, &Partials::dA, in.A.shape(), DType::f32);
  grads.dB = sum_partials(partials, &Partials::dB, in.B.shape(), dtype);
  grads.dC = sum_partials(partials, &Partials::dC, in.C.shape(), dtype);
  if (in.D.defined()) grads.dD = sum_partials(partials, &Partials::dD, in.D.shape(), DType::f32);
  if (in.delta_bias.defined())
    grads.ddelta_bias = sum_partials(partials, &Partials::ddelta_bias, in.delta_bias.shape(), DType::f32);
  return grads;
}

// The state update of 16 channels with N = 16 states each (one vector per channel, lanes over
// states; A and h rows [16][16]): the same operations as the general loop of state_update, with
// the lanes unrolled so the channels' independent exp → state → product chains overlap. The
// general loop, with its trip counts known only at run time, ran them one after another
// (~50 cycles per channel with the data in L1; docs/perf/cpu_model.md v12).
[[gnu::always_inline]] inline void update_full_block(Vec16 dp, Vec16 dpu, Vec16 B, Vec16 C, const float* A, float* h,
                                                     Vec16* products) {
#pragma GCC unroll 16
  for (int lane = 0; lane < kLanes; ++lane) {
    const Vec16 a = simd::exp(simd::broadcast(dp[lane]) * simd::load(A + lane * kLanes, kLanes));
    const Vec16 hn = simd::fma(a, simd::load(h + lane * kLanes, kLanes), simd::broadcast(dpu[lane]) * B);
    simd::store(h + lane * kLanes, hn, kLanes);
    products[lane] = simd::fma(hn, C, products[lane]);
  }
}

// The decode step, vectorised over states: the state rows [b, d, :] are contiguous, so each
// channel updates its N states 16 at a time and reduces y over them.
template <typename T>
Tensor state_update(const ScanInputs& step, Tensor& state) {
  ScanInputs used = step;  // the step ignores these two
  used.initial_state = Tensor();
  used.lengths = Tensor();
  const Scan<T> s = make_scan<T>(used, "cpu::selective_state_update");
  check_dtype(state, DType::f32, "selective state update: state");
  Tensor out = Tensor::empty(step.u.shape(), step.u.dtype());
  T* out_data = out.data<T>();
  float* states = state.data<float>();
  const int64_t N = s.n_states;
  // With delta_proj, each range of channels first computes its δ = delta_proj·low with the
  // streaming product, which reads W_dt at the machine's rate where per-block slices of it arrived
  // one memory latency at a time (docs/perf/cpu_model.md, v7), inside the same pool run as the
  // state loop (v11: one run fewer per layer).
  Tensor low, projected;
  if (step.delta_proj.defined()) {
    check_float_weight(step.delta_proj, "selective state update: delta_proj");
    low = parameter_as_f32(step.delta);
    projected = Tensor::empty({s.batch, s.dim}, DType::f32);
  }
  float* projected_delta = projected.defined() ? projected.data<float>() : nullptr;
  // One range of blocks per thread: its W_dt rows, A rows and states are then long contiguous
  // runs that the hardware prefetchers follow. Handed out in chunks of a quarter of that (so that
  // a slower thread took fewer), the same step took 1.7× as long (docs/perf/cpu_model.md v12).
  parallel_for(s.blocks(), [&](int64_t block0, int64_t block1, int) {
    if (projected_delta)
      stream_x_wt_rows(low.data<float>(), s.batch, step.delta_proj, block0 * kLanes, std::min(s.dim, block1 * kLanes),
                       projected_delta, s.dim);
    for (int64_t b = 0; b < s.batch; ++b) {
      float b_scratch[kMaxStates], c_scratch[kMaxStates];
      // The block two ahead: its states and A rows (see prefetch_bytes).
      auto prefetch_block = [&](int64_t block) {
        if (block >= block1) return;
        const int64_t d0 = block * kLanes, lanes = std::min<int64_t>(kLanes, s.dim - d0);
        prefetch_bytes(states + (b * s.dim + d0) * N, lanes * N * int64_t(sizeof(float)));
        prefetch_bytes(s.A + d0 * N, lanes * N * int64_t(sizeof(float)));
      };
      prefetch_block(block0);
      prefetch_block(block0 + 1);
      for (int64_t block = block0; block < block1; ++block) {
        prefetch_block(block + 2);
        const int64_t d0 = block * kLanes;
        const int count = int(std::min<int64_t>(kLanes, s.dim - d0));
        const size_t at = size_t(b * s.dim + d0);
        const Vec16 bias = s.delta_bias ? simd::load(s.delta_bias + d0, count) : Vec16{};
        const Vec16 delta = projected_delta ? simd::load(projected_delta + at, count) : simd::load(s.delta + at, count);
        const Vec16 x = delta + bias;
        const Vec16 u = simd::load(s.u + at, count), dp = s.softplus ? simd::softplus(x) : x, dpu = dp * u;
        const float* Bt = float_row(s.B + b * N, N, b_scratch);
        const float* Ct = float_row(s.C + b * N, N, c_scratch);
        // products[lane] holds channel d0 + lane's C·h terms, lanes over states; one transposing
        // reduction then gives y for all 16 channels.
        Vec16 products[kLanes] = {};
        if (N == kLanes && count == kLanes) {
          update_full_block(dp, dpu, simd::load(Bt, kLanes), simd::load(Ct, kLanes), s.A + d0 * N,
                            states + (b * s.dim + d0) * N, products);
        } else {
          for (int lane = 0; lane < count; ++lane) {
            const int64_t d = d0 + lane;
            float* h = states + (b * s.dim + d) * N;
            const Vec16 dp_d = simd::broadcast(dp[lane]), dpu_d = simd::broadcast(dpu[lane]);
            for (int64_t n = 0; n < N; n += kLanes) {
              const int k = int(std::min<int64_t>(kLanes, N - n));
              const Vec16 a = simd::exp(dp_d * simd::load(s.A + d * N + n, k));
              const Vec16 hn = simd::fma(a, simd::load(h + n, k), dpu_d * simd::load(Bt + n, k));
              simd::store(h + n, hn, k);
              products[lane] = simd::fma(hn, simd::load(Ct + n, k), products[lane]);
            }
          }
        }
        Vec16 y = simd::transpose_sum(products);
        if (s.D) y = simd::fma(simd::load(s.D + d0, count), u, y);
        if (s.z) {
          const Vec16 z = simd::load(s.z + at, count);
          y *= z * simd::sigmoid(z);
        }
        simd::store(out_data + at, y, count);
      }
    }
  });
  return out;
}

}  // namespace

ScanOutputs selective_scan_forward(const ScanInputs& in) {
  check_scan_inputs(in);
  return in.u.dtype() == DType::bf16 ? forward<uint16_t>(in) : forward<float>(in);
}

ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state) {
  check_scan_backward_inputs(in, dout, dlast_state);
  return in.u.dtype() == DType::bf16 ? backward<uint16_t>(in, dout, dlast_state)
                                     : backward<float>(in, dout, dlast_state);
}

Tensor selective_state_update(const ScanInputs& step, Tensor& state) {
  check_step_inputs(step, state);
  return step.u.dtype() == DType::bf16 ? state_update<uint16_t>(step, state) : state_update<float>(step, state);
}

}  // namespace mamba::ops::cpu

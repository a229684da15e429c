// Selective scan on the CPU: the fused AVX-512 kernels against a naive loop with scalar expf (the
// shape of llama.cpp's ssm_scan), plus the two ceilings the kernels can hit: memory bandwidth and
// the throughput of the vectorised exp. Results and the derived floors: docs/perf/cpu_scan.md.
//
// Arguments of the scan benchmarks: batch, L, D, N, threads. Counters: bytes_per_second counts
// the activations read and written once (u, δ, z, B, C, out; the backward also dout and
// du, dδ, dz, dB, dC), items_per_second counts state updates (batch·L·D·N per pass).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "ops/cpu/scan_simd.h"
#include "ops/selective_scan.h"

namespace mamba::ops {
namespace {

struct Shape4 {
  int64_t batch, length, dim, n_states;
};

Shape4 shape_of(const benchmark::State& state) {
  return {state.range(0), state.range(1), state.range(2), state.range(3)};
}

Tensor random_tensor(Rng& rng, const Shape& shape, DType dtype, double lo, double hi) {
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = rng.uniform(lo, hi);
  return Tensor::from_vector(v, shape, dtype);
}

// A Mamba-1 layer's scan inputs: softplus(δ + bias), A = −(1..N) scaled per channel, z and D.
ScanInputs make_inputs(const Shape4& s, DType dtype) {
  Rng rng(1);
  const Shape tokens{s.batch, s.length, s.dim}, rows{s.batch, s.length, s.n_states};
  ScanInputs in;
  in.u = random_tensor(rng, tokens, dtype, -1, 1);
  in.delta = random_tensor(rng, tokens, dtype, -3, 0);
  std::vector<double> A(size_t(s.dim * s.n_states));
  for (size_t i = 0; i < A.size(); ++i) A[i] = -double(i % size_t(s.n_states) + 1) * rng.uniform(0.5, 1.5);
  in.A = Tensor::from_vector(A, {s.dim, s.n_states}, DType::f32);
  in.B = random_tensor(rng, rows, dtype, -1, 1);
  in.C = random_tensor(rng, rows, dtype, -1, 1);
  in.D = random_tensor(rng, {s.dim}, DType::f32, 0.5, 1.5);
  in.z = random_tensor(rng, tokens, dtype, -2, 2);
  in.delta_bias = random_tensor(rng, {s.dim}, DType::f32, -1, 0);
  in.delta_softplus = true;
  return in;
}

void set_counters(benchmark::State& state, const Shape4& s, DType dtype, int passes, int token_tensors,
                  int row_tensors) {
  const double element = double(dtype_size(dtype));
  const double bytes = element * double(s.batch * s.length) * double(token_tensors * s.dim + row_tensors * s.n_states);
  state.SetBytesProcessed(int64_t(bytes) * state.iterations());
  state.SetItemsProcessed(int64_t(passes) * s.batch * s.length * s.dim * s.n_states * state.iterations());
}

void BM_ScanForward(benchmark::State& state, DType dtype) {
  const Shape4 s = shape_of(state);
  set_num_threads(int(state.range(4)));
  const ScanInputs in = make_inputs(s, dtype);
  for (auto _ : state) benchmark::DoNotOptimize(cpu::selective_scan_forward(in).out.raw());
  set_counters(state, s, dtype, 1, 4, 2);  // u, δ, z, out; B, C
}

void BM_ScanForwardBackward(benchmark::State& state, DType dtype) {
  const Shape4 s = shape_of(state);
  set_num_threads(int(state.range(4)));
  const ScanInputs in = make_inputs(s, dtype);
  Rng rng(2);
  const Tensor dout = random_tensor(rng, in.u.shape(), dtype, -1, 1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(cpu::selective_scan_forward(in).out.raw());
    benchmark::DoNotOptimize(cpu::selective_scan_backward(in, dout, {}).du.raw());
  }
  // Forward as above; backward reads u, δ, z, dout, B, C, writes du, dδ, dz, dB, dC.
  set_counters(state, s, dtype, 3, 4 + 7, 2 + 4);
}

// The naive variant: state [D, N] in memory, loops t → d → n, one scalar expf per state update,
// threaded over channels. f32 only.
void naive_forward(const ScanInputs& in, Tensor& out, std::vector<float>& h) {
  const int64_t batch = in.u.size(0), length = in.u.size(1), dim = in.u.size(2), N = in.A.size(1);
  const float *u = in.u.data<float>(), *delta = in.delta.data<float>(), *A = in.A.data<float>();
  const float *B = in.B.data<float>(), *C = in.C.data<float>(), *D = in.D.data<float>();
  const float *z = in.z.data<float>(), *bias = in.delta_bias.data<float>();
  float* y = out.data<float>();
  for (int64_t b = 0; b < batch; ++b) {
    std::fill(h.begin(), h.end(), 0.0f);
    parallel_for(dim, [&](int64_t d_begin, int64_t d_end, int) {
      for (int64_t t = 0; t < length; ++t) {
        const int64_t row = (b * length + t) * dim, bc = (b * length + t) * N;
        for (int64_t d = d_begin; d < d_end; ++d) {
          const float x = delta[row + d] + bias[d];
          const float dp = x > 20.0f ? x : std::log1p(std::exp(x));
          float acc = D[d] * u[row + d];
          for (int64_t n = 0; n < N; ++n) {
            float& hn = h[size_t(d * N + n)];
            hn = std::exp(dp * A[d * N + n]) * hn + dp * B[bc + n] * u[row + d];
            acc += C[bc + n] * hn;
          }
          const float g = z[row + d];
          y[row + d] = acc * g / (1.0f + std::exp(-g));
        }
      }
    });
  }
}

void BM_ScanForwardNaiveScalarExp(benchmark::State& state) {
  const Shape4 s = shape_of(state);
  set_num_threads(int(state.range(4)));
  const ScanInputs in = make_inputs(s, DType::f32);
  Tensor out = Tensor::empty(in.u.shape(), DType::f32);
  std::vector<float> h(size_t(s.dim * s.n_states));
  for (auto _ : state) {
    naive_forward(in, out, h);
    benchmark::DoNotOptimize(out.raw());
  }
  set_counters(state, s, DType::f32, 1, 4, 2);
}

// One decode step of a 130m layer (batch 1, D 1536, N 16): the state is read and written once.
void BM_StateUpdate(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  const Shape4 s{1, 1, 1536, 16};
  const ScanInputs scan = make_inputs(s, DType::f32);
  ScanInputs step = scan;
  for (Tensor* t : {&step.u, &step.delta, &step.z}) *t = t->view({1, s.dim});
  for (Tensor* t : {&step.B, &step.C}) *t = t->view({1, s.n_states});
  Tensor ssm_state = Tensor::zeros({1, s.dim, s.n_states}, DType::f32);
  for (auto _ : state) benchmark::DoNotOptimize(cpu::selective_state_update(step, ssm_state).raw());
  state.SetBytesProcessed(int64_t(2 * s.dim * s.n_states * 4) * state.iterations());
  state.SetItemsProcessed(s.dim * s.n_states * state.iterations());
}

// Throughput of the vectorised 2^x and of scalar expf on an L1-resident array (one thread).
void BM_FastExp2(benchmark::State& state) {
  std::vector<float> x(4096);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -float(i % 97) * 0.173f;
  cpu::simd::Vec16 sum{};
  for (auto _ : state) {
    for (size_t i = 0; i < x.size(); i += cpu::simd::kLanes)
      sum += cpu::simd::exp2(cpu::simd::load(&x[i], cpu::simd::kLanes));
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(int64_t(x.size()) * state.iterations());
}

void BM_ScalarExpf(benchmark::State& state) {
  std::vector<float> x(4096);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -float(i % 97) * 0.173f;
  float sum = 0;
  for (auto _ : state) {
    for (float v : x) sum += std::exp(v);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(int64_t(x.size()) * state.iterations());
}

// Streaming read + write of 256 MiB (bytes_per_second counts both), the bandwidth ceiling.
void BM_MemoryCopy(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  const size_t n = size_t(64) << 20;
  std::vector<float> src(n, 1.0f), dst(n);
  for (auto _ : state) {
    parallel_for(int64_t(n), [&](int64_t begin, int64_t end, int) {
      std::memcpy(&dst[size_t(begin)], &src[size_t(begin)], size_t(end - begin) * sizeof(float));
    });
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(int64_t(2 * n * sizeof(float)) * state.iterations());
}

// 130m prefill (batch 1, L 512, D 1536, N 16) and a training shape (batch 4, L 1024), on one thread
// and on every core.
// On a shared machine the fastest repetition is the best estimate of the uncontended cost.
double fastest(const std::vector<double>& times) { return *std::min_element(times.begin(), times.end()); }

void scan_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t threads : {1, hardware_threads()}) {
    b->Args({1, 512, 1536, 16, threads});
    b->Args({4, 1024, 1536, 16, threads});
    if (threads == hardware_threads()) break;
  }
  b->ArgNames({"batch", "L", "D", "N", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
  b->ComputeStatistics("min", fastest);
}

BENCHMARK_CAPTURE(BM_ScanForward, f32, DType::f32)->Apply(scan_shapes);
BENCHMARK_CAPTURE(BM_ScanForward, bf16, DType::bf16)->Apply(scan_shapes);
BENCHMARK(BM_ScanForwardNaiveScalarExp)->Apply(scan_shapes);
BENCHMARK_CAPTURE(BM_ScanForwardBackward, f32, DType::f32)->Apply(scan_shapes);
BENCHMARK_CAPTURE(BM_ScanForwardBackward, bf16, DType::bf16)->Apply(scan_shapes);
BENCHMARK(BM_StateUpdate)->Arg(1)->Arg(hardware_threads())->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(BM_FastExp2)->ComputeStatistics("min", fastest);
BENCHMARK(BM_ScalarExpf)->ComputeStatistics("min", fastest);
BENCHMARK(BM_MemoryCopy)->Arg(1)->Arg(hardware_threads())->UseRealTime()->ComputeStatistics("min", fastest);

}  // namespace
}  // namespace mamba::ops

// Micro-benchmarks of the CPU ops on Mamba-130m shapes (d 768, D 1536, N 16, R 48, V 50280).
//
//   mambacpp_bench [--threads=N] [google benchmark flags, e.g. --benchmark_filter=Linear]
//
// Linear reports GFLOP/s and the weight bytes streamed per second (GB/s). Runs with M ≤ 64
// cycle through enough copies of the weight to exceed the last-level cache, as a model's layers
// do, so GB/s is the memory bandwidth a real decode step sees, not a cache-resident number.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "ops/causal_conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/linear.h"
#include "ops/norm.h"

namespace mamba {
namespace {

Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = scale * rng.uniform(-1, 1);
  return Tensor::from_vector(v, shape, dtype);
}

struct WeightShape {
  const char* name;
  int64_t N, K;
};
constexpr WeightShape kWeights[] = {
    {"in_proj", 3072, 768},  {"x_proj", 80, 1536},    {"dt_proj", 1536, 48},
    {"out_proj", 768, 1536}, {"lm_head", 50280, 768},
};

// Copies of the weight whose total size exceeds the caches (at least 256 MiB, or one copy).
std::vector<Tensor> weight_copies(const WeightShape& w, DType dtype) {
  Tensor first = random_tensor({w.N, w.K}, dtype, 1, 0.05);
  size_t copies = std::max<size_t>(1, (size_t(256) << 20) / first.nbytes());
  std::vector<Tensor> all{first};
  for (size_t i = 1; i < copies; ++i) all.push_back(first.clone());
  return all;
}

void BM_Linear(benchmark::State& state, WeightShape w, DType dtype) {
  int64_t M = state.range(0);
  std::vector<Tensor> weights =
      M <= 64 ? weight_copies(w, dtype) : std::vector<Tensor>{random_tensor({w.N, w.K}, dtype, 1, 0.05)};
  Tensor x = random_tensor({M, w.K}, DType::f32, 2);
  size_t next = 0;
  for (auto _ : state) {
    Tensor y = ops::linear_forward(x, weights[next]);
    benchmark::DoNotOptimize(y.raw());
    next = (next + 1) % weights.size();
  }
  double flops = 2.0 * double(M) * double(w.N) * double(w.K);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["W_GB/s"] =
      benchmark::Counter(double(weights[0].nbytes()) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_linear() {
  for (const WeightShape& w : kWeights)
    for (DType dtype : {DType::f32, DType::bf16}) {
      std::string name = std::string("Linear/") + w.name + "/" + dtype_name(dtype);
      auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Linear, w, dtype);
      for (int64_t M : {1, 4, 8, 16, 64, 512}) b->Arg(M);
      b->ArgName("M")->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
}

// Training-sized LM head + cross-entropy (forward and backward), V = 50280, d = 768.
void BM_LmHeadCrossEntropy(benchmark::State& state, DType dtype) {
  const int64_t M = state.range(0), V = 50280, d = 768;
  Tensor w = random_tensor({V, d}, dtype, 1, 0.05), h = random_tensor({M, d}, DType::f32, 2);
  Rng rng(3);
  std::vector<double> t;
  for (int64_t i = 0; i < M; ++i) t.push_back(double(rng.below(V)));
  Tensor targets = Tensor::from_vector(t, {M}, DType::i32);
  Tensor dw = Tensor::zeros({V, d}, DType::f32);
  for (auto _ : state) {
    ops::CrossEntropyResult r = ops::lm_head_cross_entropy(h, w, targets, true, &dw);
    benchmark::DoNotOptimize(r.loss);
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(3 * 2.0 * double(M * V * d) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Prefill-sized conv (D = 1536, K = 4, L = 512) and fused add + RMSNorm (d = 768, 512 rows).
void BM_Conv1dForward(benchmark::State& state) {
  ops::ConvInputs in;
  in.x = random_tensor({1, 512, 1536}, DType::f32, 1);
  in.weight = random_tensor({1536, 4}, DType::f32, 2);
  in.bias = random_tensor({1536}, DType::f32, 3);
  for (auto _ : state) benchmark::DoNotOptimize(ops::causal_conv1d_forward(in).out.raw());
  state.SetBytesProcessed(int64_t(state.iterations()) * 2 * int64_t(in.x.nbytes()));
}

void BM_AddRmsNorm(benchmark::State& state) {
  ops::NormInputs in;
  in.x = random_tensor({512, 768}, DType::f32, 1);
  in.residual = random_tensor({512, 768}, DType::f32, 2);
  in.weight = random_tensor({768}, DType::f32, 3);
  for (auto _ : state) benchmark::DoNotOptimize(ops::add_norm_forward(in).out.raw());
  state.SetBytesProcessed(int64_t(state.iterations()) * 4 * int64_t(in.x.nbytes()));
}

void register_others() {
  for (DType dtype : {DType::f32, DType::bf16})
    benchmark::RegisterBenchmark((std::string("LmHeadCrossEntropy/") + dtype_name(dtype)).c_str(),
                                 BM_LmHeadCrossEntropy, dtype)
        ->Arg(16)
        ->Arg(64)
        ->ArgName("M")
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  benchmark::RegisterBenchmark("Conv1dForward/L512/D1536", BM_Conv1dForward)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("AddRmsNorm/M512/d768", BM_AddRmsNorm)->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace
}  // namespace mamba

int main(int argc, char** argv) {
  int threads = 2;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::stoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_count = int(rest.size());
  mamba::set_num_threads(threads);
  mamba::register_linear();
  mamba::register_others();
  benchmark::AddCustomContext("mambacpp_threads", std::to_string(mamba::num_threads()));
  benchmark::Initialize(&rest_count, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

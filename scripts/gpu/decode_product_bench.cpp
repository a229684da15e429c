// The decode step's products alone on the GPU: each case chains `layers` calls of one op (each call
// with its own weight, so that the weights stream from HBM as in a decode step, not from L2),
// recorded as a CUDA graph as the decode step is, and replayed under cudaEvents. Prints µs per
// call and the weight's read rate (bytes of W per call / time), against which the decode floor
// of TARGETS.md counts 3.0 TB/s. Cases: the 1.4b and 130m shapes' in-projection with its pre-norm
// and conv step (ops::in_projection_step), the same product alone, x_proj, out_proj and the LM
// head, at batch 1 and 16.
// Usage: decode_product_bench [BATCH ...]   (default: 1 16)
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "bench_timing.h"
#include "core/device.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/in_projection_step.h"
#include "ops/linear.h"

namespace {
using namespace mamba;
using namespace mamba::gpu_bench;

// Median ms of `reps` replays of `work` recorded once (after one eager run that fills the caches
// and plans a recording must not create).
double median_replay_ms(const std::function<void()>& work, int reps) {
  work();
  check(cudaDeviceSynchronize(), "eager run");
  RecordedWork recorded(work);
  return median_ms([&] { recorded.replay(); }, 3, reps);
}

struct Case {
  std::string name;
  int64_t k, n;
  bool in_projection;  // with the pre-norm and the conv step of its first n / 2 columns
  int layers;
};

void run_case(const Case& c, int64_t batch, Rng& rng) {
  const DType bf16 = DType::bf16;
  const Tensor x = random_gpu(rng, {batch, c.k}, bf16, -1, 1);
  const Tensor residual = random_gpu(rng, {batch, c.k}, DType::f32, -1, 1);
  const Tensor norm_weight = random_gpu(rng, {c.k}, DType::f32, 0.5, 1.5);
  std::vector<Tensor> weights, conv_weights, conv_states;
  const double scale = 1.0 / double(c.k);
  for (int l = 0; l < c.layers; ++l) {
    // Weights repeat one random draw (drawing 10⁹ host randoms would take minutes); each layer
    // still has its own copy in memory.
    weights.push_back(l == 0 ? random_gpu(rng, {c.n, c.k}, bf16, -scale, scale) : weights[0].clone());
    if (c.in_projection) {
      conv_weights.push_back(random_gpu(rng, {c.n / 2, 4}, DType::f32, -0.5, 0.5));
      conv_states.push_back(Tensor::zeros({batch, c.n / 2, 3}, DType::f32, Device::cuda));
    }
  }
  std::vector<Tensor> outputs(size_t(c.layers));
  auto work = [&] {
    for (int l = 0; l < c.layers; ++l) {
      if (c.in_projection) {
        ops::InProjectionStep in;
        in.norm.x = x;
        in.norm.residual = residual;
        in.norm.weight = norm_weight;
        in.weight = weights[size_t(l)];
        in.conv_weight = conv_weights[size_t(l)];
        outputs[size_t(l)] = ops::in_projection_step(in, conv_states[size_t(l)]).x_conv;
      } else {
        outputs[size_t(l)] = ops::linear_forward(x, weights[size_t(l)]);
      }
    }
  };
  const double ms = median_replay_ms(work, 20);
  const double us_per_call = ms * 1e3 / c.layers, bytes = double(c.n) * double(c.k) * 2;
  std::printf("%-32s b%-3lld %6lld x %-6lld %8.2f MB %9.2f us %8.2f TB/s  (floor at 3.0 TB/s: %.2f us)\n",
              c.name.c_str(), (long long)batch, (long long)c.k, (long long)c.n, bytes / 1e6, us_per_call,
              bytes / (us_per_call * 1e-6) / 1e12, bytes / 3.0e12 * 1e6);
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace mamba;
  std::vector<int64_t> batches;
  for (int i = 1; i < argc; ++i) {
    char* end = nullptr;
    const long long batch = std::strtoll(argv[i], &end, 10);
    MAMBA_CHECK(end != argv[i] && *end == '\0' && batch >= 1 && batch <= 16, "decode_product_bench: batch '", argv[i],
                "': expected a whole number from 1 to 16 (sequences decoded together)");
    batches.push_back(batch);
  }
  if (batches.empty()) batches = {1, 16};
  const std::vector<Case> cases = {
      {"1.4b in-projection (norm, conv)", 2048, 8192, true, 24},
      {"1.4b in_proj product alone", 2048, 8192, false, 24},
      {"1.4b x_proj", 4096, 160, false, 48},
      {"1.4b out_proj", 4096, 2048, false, 48},
      {"1.4b LM head", 2048, 50280, false, 4},
      {"130m in-projection (norm, conv)", 768, 3072, true, 96},
      {"130m in_proj product alone", 768, 3072, false, 96},
      {"130m x_proj", 1536, 80, false, 96},
      {"130m out_proj", 1536, 768, false, 96},
  };
  Rng rng(3);
  std::printf("decode products, chained calls in one recorded graph\n");
  for (int64_t batch : batches)
    for (const Case& c : cases) run_case(c, batch, rng);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}

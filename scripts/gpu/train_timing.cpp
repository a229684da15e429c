// Where a bf16 training step's time goes outside its kernels (random mamba-130m shape, batch 8 ×
// 2048, AdamW with clipping, as `mambacpp train` steps). Per step: the host time until
// forward_backward returns, how much longer the GPU needs for what was queued, and the GPU time
// between CUDA events at the step's start, at that return and after the optimizer. forward_backward
// waits for the GPU inside (the loss, the host checks of ids and targets, last the embedding
// backward's check of the ids), so the GPU is nearly done when it returns; the event span against
// the ncu kernel sum (run.sh train-profile) sizes the time between kernels.
// Usage: train_timing [STEPS]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/timer.h"
#include "model/language_model.h"
#include "model/presets.h"
#include "train/optimizer.h"

using namespace mamba;

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::stoi(argv[1]) : 12;
  const int64_t batch = 8, length = 2048;
  auto model = model::LanguageModel::initialize(model::preset_config("130m", "shape"), 1, Device::cuda);
  model->use_mixed_precision();
  model->enable_grad();
  train::Optimizer optimizer({}, model->parameters());
  Rng rng(3);
  Tensor ids = Tensor::empty({batch, length}, DType::i32), targets = Tensor::empty({batch, length}, DType::i32);
  cudaEvent_t start, queued, done;
  cudaEventCreate(&start);
  cudaEventCreate(&queued);
  cudaEventCreate(&done);
  std::vector<double> columns[6];  // wall, host until return, GPU after return, GPU fwd+bwd, GPU optimizer, host opt
  for (int step = 0; step < steps; ++step) {
    for (int64_t i = 0; i < ids.numel(); ++i) {
      ids.data<int32_t>()[i] = int32_t(rng.below(50277));
      targets.data<int32_t>()[i] = int32_t(rng.below(50277));
    }
    Timer wall;
    cudaEventRecord(start, cudaStreamPerThread);
    model->zero_grad(/*next_pass_overwrites=*/true);  // as `mambacpp train` does with one micro-batch
    model->forward_backward(ids, targets, /*with_grad=*/true);
    const double host_returned = wall.seconds();
    cudaEventRecord(queued, cudaStreamPerThread);
    cudaEventSynchronize(queued);
    const double gpu_done = wall.seconds();
    optimizer.step(model->parameters(), 3e-4, 1.0);
    model->parameters_changed(/*compute_copies_current=*/true);
    cudaEventRecord(done, cudaStreamPerThread);
    cudaEventSynchronize(done);
    float fb_ms = 0, opt_ms = 0;
    cudaEventElapsedTime(&fb_ms, start, queued);
    cudaEventElapsedTime(&opt_ms, queued, done);
    const double total = wall.seconds();
    if (step < 3) continue;  // warm-up: allocator and cuBLASLt plans
    columns[0].push_back(total * 1e3);
    columns[1].push_back(host_returned * 1e3);
    columns[2].push_back((gpu_done - host_returned) * 1e3);
    columns[3].push_back(fb_ms);
    columns[4].push_back(opt_ms);
    columns[5].push_back((total - gpu_done) * 1e3);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  std::printf("training step, 130m bf16, batch 8 x 2048, medians of %d steps (ms):\n", steps - 3);
  std::printf("  step wall                                   %8.2f\n", median(columns[0]));
  std::printf("  zero_grad + forward_backward, host returns  %8.2f\n", median(columns[1]));
  std::printf("  GPU still busy after that return            %8.2f\n", median(columns[2]));
  std::printf("  GPU events: step start -> backward's end    %8.2f\n", median(columns[3]));
  std::printf("  GPU events: optimizer                       %8.2f\n", median(columns[4]));
  std::printf("  host: optimizer step (its norm read waits)  %8.2f\n", median(columns[5]));
  return 0;
}

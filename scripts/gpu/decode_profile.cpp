// Where a decode step's time goes (random bf16 model of a preset shape, a 16-token prompt): the
// step as `mambacpp bench` runs it (logits copied to the host, argmax there), without the argmax,
// and with the logits left on the GPU; then two steps between cudaProfilerStart/Stop, for
// `ncu --profile-from-start off --graph-profiling node` to time each kernel of the recorded step.
// Usage: decode_profile SHAPE BATCH
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "core/rng.h"
#include "model/language_model.h"
#include "model/presets.h"

using namespace mamba;

int main(int argc, char** argv) {
  const std::string shape = argc > 1 ? argv[1] : "130m";
  const int64_t batch = argc > 2 ? std::stoll(argv[2]) : 1;
  auto model = model::LanguageModel::initialize(model::preset_config(shape, "shape"), 1, Device::cuda);
  model->convert_weight_matrices(DType::bf16);
  const int64_t vocab = model->config().vocab_size;
  Rng rng(5);
  Tensor prompt = Tensor::empty({batch, 16}, DType::i32);
  for (int64_t i = 0; i < prompt.numel(); ++i) prompt.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
  model::InferenceState state = model->new_state(batch);
  Tensor logits = on_host(model->prefill(state, prompt));
  Tensor tokens = Tensor::zeros({batch}, DType::i32);
  auto argmax = [&](const Tensor& host) {
    for (int64_t b = 0; b < batch; ++b) {
      const float* row = host.data<float>() + b * host.size(-1);
      tokens.data<int32_t>()[b] = int32_t(std::max_element(row, row + vocab) - row);
    }
  };
  for (int i = 0; i < 5; ++i) argmax(on_host(model->step(state, tokens)));
  const int steps = 200;
  auto time_steps = [&](const char* what, auto body) {
    cudaDeviceSynchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) body();
    cudaDeviceSynchronize();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-6s b%-3lld %-44s %8.3f ms/step\n", shape.c_str(), (long long)batch, what, ms / steps);
  };
  time_steps("step, logits to host, argmax there (bench)", [&] { argmax(on_host(model->step(state, tokens))); });
  time_steps("step, logits to host", [&] { logits = on_host(model->step(state, tokens)); });
  time_steps("step, logits stay on the GPU", [&] { logits = model->step(state, tokens); });
  Tensor host_logits = on_host(model->step(state, tokens));
  time_steps("host argmax alone", [&] { argmax(host_logits); });
  cudaProfilerStart();
  for (int i = 0; i < 2; ++i) logits = model->step(state, tokens);
  cudaDeviceSynchronize();
  cudaProfilerStop();
  return 0;
}

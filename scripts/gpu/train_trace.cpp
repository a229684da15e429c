// A timeline of bf16 training steps (random weights of a preset shape, default mamba-130m at batch
// 8 × 2048, AdamW with clipping, as `mambacpp train` steps them) or of bf16 prefills (random weights of a preset shape,
// 2048 random ids a sequence, as `mambacpp bench` prefills them), from CUPTI's activity records: every kernel, copy and
// fill the GPU ran, with its start and end. Per step: the GPU's busy time by kind, the time it sat idle between two of
// them (waiting for the host), the largest such gaps and what followed them, and the kernels by total time (ncu's
// table, but timed inside the running step, not serialised). Usage: train_trace [STEPS] [eager]   (130m, batch 8; the
// first 3 steps are warm-up, not counted;
//                                       `eager`: every pass queued kernel by kernel, where the library
//                                       can replay passes from a CUDA graph)
//        train_trace train SHAPE BATCH [STEPS]
//        train_trace prefill SHAPE BATCH [STEPS]
//        train_trace decode SHAPE BATCH [STEPS]   (steps of the recorded decode graph after a
//                                                  16-token prompt, each with its argmax)
#include <cuda_runtime_api.h>
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/language_model.h"
#include "model/presets.h"
#include "ops/argmax.h"
#include "train/optimizer.h"

using namespace mamba;

namespace {

struct Activity {
  uint64_t start, end;
  std::string name;  // kernel name, or "memcpy HtoD" etc.
  uint64_t bytes = 0;
};
std::vector<Activity> g_activities;

void check(CUptiResult status, const char* what) {
  if (status == CUPTI_SUCCESS) return;
  const char* text = nullptr;
  cuptiGetResultString(status, &text);
  std::fprintf(stderr, "CUPTI %s failed: %s\n", what, text ? text : "?");
  std::exit(1);
}

std::string short_name(const char* mangled) {
  int status = 0;
  char* plain = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string name = status == 0 && plain ? plain : mangled;
  std::free(plain);
  for (size_t at; (at = name.find("(anonymous namespace)::")) != std::string::npos;) name.erase(at, 23);
  const size_t paren = name.find('(');
  if (paren != std::string::npos) name.resize(paren);
  if (name.size() > 70) name = name.substr(0, 67) + "...";
  return name;
}

const char* copy_kind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD:
      return "memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH:
      return "memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD:
      return "memcpy DtoD";
    default:
      return "memcpy other";
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = size_t(16) << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || record->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(record);
      g_activities.push_back({k->start, k->end, short_name(k->name)});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      auto* m = reinterpret_cast<CUpti_ActivityMemcpy6*>(record);
      g_activities.push_back({m->start, m->end, copy_kind(m->copyKind), m->bytes});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      auto* m = reinterpret_cast<CUpti_ActivityMemset4*>(record);
      g_activities.push_back({m->start, m->end, "memset", m->bytes});
    }
  }
  std::free(buffer);
}

double ms(uint64_t ns) { return double(ns) * 1e-6; }

// Also builds against library versions that have no recorded training passes.
template <typename Model>
void keep_passes_eager(Model& model) {
  if constexpr (requires { model.set_training_recording(false); }) model.set_training_recording(false);
}

// The host clock (CUPTI's) at the start and end of each counted step.
using Windows = std::vector<std::pair<uint64_t, uint64_t>>;
constexpr int kWarmupSteps = 3;

// `prepare` runs before each step, outside its window.
template <typename Prepare, typename Step>
Windows time_steps(int steps, Prepare&& prepare, Step&& step) {
  Windows windows;
  for (int i = 0; i < steps; ++i) {
    prepare();
    cudaDeviceSynchronize();
    uint64_t begin = 0, end = 0;
    cuptiGetTimestamp(&begin);
    step();
    cudaDeviceSynchronize();
    cuptiGetTimestamp(&end);
    if (i >= kWarmupSteps) windows.emplace_back(begin, end);
  }
  return windows;
}

Windows trace_training(const std::string& shape, int64_t batch, int steps, bool eager) {
  const int64_t length = 2048;
  auto model = model::LanguageModel::initialize(model::preset_config(shape, "shape"), 1, Device::cuda);
  model->use_mixed_precision();
  model->enable_grad();
  if (eager) keep_passes_eager(*model);
  train::Optimizer optimizer({}, model->parameters());
  const int64_t vocab = model->config().vocab_size;
  Rng rng(3);
  Tensor ids = Tensor::empty({batch, length}, DType::i32), targets = Tensor::empty({batch, length}, DType::i32);
  auto random_batch = [&] {
    for (int64_t i = 0; i < ids.numel(); ++i) {
      ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
      targets.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
    }
  };
  return time_steps(steps, random_batch, [&] {
    model->zero_grad(/*next_pass_overwrites=*/true);  // as `mambacpp train` does with one micro-batch
    model->forward_backward(ids, targets, /*with_grad=*/true);
    optimizer.step(model->parameters(), 3e-4, 1.0);
    model->parameters_changed(/*compute_copies_current=*/true);
  });
}

Windows trace_prefill(const std::string& shape, int64_t batch, int steps) {
  const int64_t length = 2048;
  auto model = model::LanguageModel::initialize(model::preset_config(shape, "shape"), 1, Device::cuda);
  model->convert_weight_matrices(DType::bf16);
  model->lay_out_for_decode();
  const int64_t vocab = model->config().vocab_size;
  Rng rng(3);
  Tensor prompt = Tensor::empty({batch, length}, DType::i32);
  for (int64_t i = 0; i < prompt.numel(); ++i) prompt.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
  // A fresh state before each prefill, outside its window (as `mambacpp bench` times it).
  model::InferenceState state;
  return time_steps(
      steps, [&] { state = model->new_state(batch); },
      [&] { ops::argmax_rows(model->prefill(state, prompt), vocab).to(Device::cpu); });
}

// Decode steps as `mambacpp bench` runs them: the step replayed from its CUDA graph, the greedy
// argmax on the GPU, the ids back to the host.
Windows trace_decode(const std::string& shape, int64_t batch, int steps) {
  auto model = model::LanguageModel::initialize(model::preset_config(shape, "shape"), 1, Device::cuda);
  model->convert_weight_matrices(DType::bf16);
  model->lay_out_for_decode();
  model->set_inference_recording(true);
  const int64_t vocab = model->config().vocab_size;
  Rng rng(3);
  Tensor prompt = Tensor::empty({batch, 16}, DType::i32);
  for (int64_t i = 0; i < prompt.numel(); ++i) prompt.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));
  model::InferenceState state = model->new_state(batch);
  Tensor tokens = ops::argmax_rows(model->prefill(state, prompt), vocab).to(Device::cpu);
  return time_steps(
      steps, [] {}, [&] { tokens = ops::argmax_rows(model->step(state, tokens), vocab).to(Device::cpu); });
}

}  // namespace

int main(int argc, char** argv) {
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "register");
  for (CUpti_ActivityKind kind :
       {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET})
    check(cuptiActivityEnable(kind), "enable");
  const std::string first = argc > 1 ? argv[1] : "";
  std::string title;
  Windows windows;
  if (first == "prefill" || first == "train" || first == "decode") {
    const std::string shape = argc > 2 ? argv[2] : "1.4b";
    const int64_t batch = argc > 3 ? std::stoll(argv[3]) : 1;
    const int steps = argc > 4 ? std::stoi(argv[4]) : 8;
    windows = first == "prefill" ? trace_prefill(shape, batch, steps)
              : first == "train" ? trace_training(shape, batch, steps, false)
                                 : trace_decode(shape, batch, steps);
    title =
        first + " timeline, " + shape + " bf16, batch " + std::to_string(batch) + (first == "decode" ? "" : " x 2048");
  } else {
    const bool eager = argc > 2 && std::string(argv[2]) == "eager";
    windows = trace_training("130m", 8, argc > 1 ? std::stoi(argv[1]) : 8, eager);
    title = std::string("training step timeline, 130m bf16, batch 8 x 2048") + (eager ? ", eager passes" : "");
  }
  check(cuptiActivityFlushAll(1), "flush");
  std::sort(g_activities.begin(), g_activities.end(),
            [](const Activity& a, const Activity& b) { return a.start < b.start; });

  // links: how far each activity moved the latest end forward (Σ over a step = its span), by name;
  // in a chain of overlapping (PDL) launches, what each kernel adds to the step.
  std::map<std::string, std::pair<int, uint64_t>> busy_by_kind, kernels, gaps_before, links;
  std::vector<std::pair<uint64_t, std::string>> gaps;
  uint64_t wall = 0, span = 0, idle = 0, lead = 0;
  for (const auto& [begin, end] : windows) {
    wall += end - begin;
    uint64_t frontier = 0, first = 0;
    std::string previous = "(step start)";
    for (const Activity& a : g_activities) {
      if (a.start < begin || a.start > end) continue;
      const bool kernel = a.name.rfind("mem", 0) != 0;
      auto& kind = busy_by_kind[kernel ? "kernels" : a.name];
      kind.first += 1;
      kind.second += a.end - a.start;
      if (kernel || a.name == "memset") {
        const std::string key = kernel ? a.name : "memset of " + std::to_string(a.bytes) + " bytes";
        kernels[key].first += 1;
        kernels[key].second += a.end - a.start;
      }
      if (first == 0) {
        first = a.start;
        lead += a.start - begin;
      } else if (a.start > frontier) {
        const uint64_t gap = a.start - frontier;
        idle += gap;
        gaps.emplace_back(gap, previous + " -> " + a.name);
        gaps_before[a.name].first += 1;
        gaps_before[a.name].second += gap;
      }
      if (a.end > frontier) {
        links[a.name].first += 1;
        links[a.name].second += a.end - (frontier == 0 ? a.start : frontier);
      }
      frontier = std::max(frontier, a.end);
      previous = a.name;
    }
    span += frontier - first;
  }
  const double n = double(windows.size());
  std::printf("%s, mean of %zu steps (ms per step)\n", title.c_str(), windows.size());
  std::printf("  host: synchronised step start to end         %8.2f\n", ms(wall) / n);
  std::printf("  host start to the GPU's first activity         %8.3f\n", ms(lead) / n);
  std::printf("  GPU: first activity start to last end          %8.2f\n", ms(span) / n);
  std::printf("  GPU idle between activities inside that span   %8.2f\n", ms(idle) / n);
  for (const auto& [kind, v] : busy_by_kind)
    std::printf("  busy: %-20s %6.1f per step  %8.2f ms\n", kind.c_str(), v.first / n, ms(v.second) / n);
  std::sort(gaps.rbegin(), gaps.rend());
  std::printf("largest idle gaps (us): what ran before -> what came after\n");
  for (size_t i = 0; i < std::min<size_t>(gaps.size(), 12); ++i)
    std::printf("  %9.1f  %s\n", double(gaps[i].first) * 1e-3, gaps[i].second.c_str());
  // The `rows` largest entries of a table of (count, ns) by name, per step.
  auto print_largest = [&](const char* title, const std::map<std::string, std::pair<int, uint64_t>>& table,
                           size_t rows) {
    std::vector<std::pair<uint64_t, std::string>> by_time;
    for (const auto& [name, v] : table) by_time.emplace_back(v.second, name);
    std::sort(by_time.rbegin(), by_time.rend());
    std::printf("%s\n", title);
    for (size_t i = 0; i < std::min(by_time.size(), rows); ++i)
      std::printf("  %8.3f  %6.1f  %s\n", ms(by_time[i].first) / n, table.at(by_time[i].second).first / n,
                  by_time[i].second.c_str());
  };
  print_largest("idle time by the activity that ended it (ms per step, gaps per step)", gaps_before, 12);
  print_largest("kernels and memsets by time (ms per step, calls per step)", kernels, 30);
  print_largest("links: how far each moved the step's latest end (ms per step, count per step)", links, 30);
  return 0;
}

// mambacpp bench: prefill and decode speed, like llama-bench (pp = prompt, tg = generation).
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/command.h"
#include "core/memory_probe.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "model/presets.h"
#include "ops/argmax.h"

namespace mamba::cli {
namespace {

struct BenchArgs {
  CommonOptions common;
  std::string model_dir, shape;
  int64_t batch = 1, prompt_tokens = 512, gen_tokens = 128, reps = 5, chunk = 2048, warmup = 2;
  uint64_t seed = 1;
  bool json = false;
  bool no_graph = false;
  bool sync_each_token = false;
  std::string decode_stack = "auto";
};

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

struct Summary {
  double median, min, max;
};
Summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return {median, v.front(), v.back()};
}

// The bytes a decode step reads: every weight once (a tied embedding is one tensor).
std::vector<std::span<const std::byte>> decode_weights(model::LanguageModel& model) {
  std::vector<std::span<const std::byte>> buffers;
  std::set<const void*> seen;
  for (const model::Parameter& p : model.parameters()) {
    const Tensor& t = p.for_compute();
    if (seen.insert(t.raw_rows()).second) buffers.emplace_back(static_cast<const std::byte*>(t.raw_rows()), t.nbytes());
  }
  return buffers;
}

// Prefill; prompts longer than 32 chunks go in pieces of 32 chunks that carry the state (the same
// chunk boundaries, so the same result), with progress on stderr: a 1,000,000-token prompt takes
// minutes on a CPU.
Tensor prefill_showing_progress(model::LanguageModel& model, model::InferenceState& state, const Tensor& prompt,
                                int64_t chunk) {
  const int64_t batch = prompt.size(0), length = prompt.size(1), piece = 32 * chunk;
  if (length <= piece) return model.prefill(state, prompt, {}, chunk);
  Timer timer;
  Tensor logits;
  for (int64_t p0 = 0; p0 < length; p0 += piece) {
    const int64_t width = std::min(piece, length - p0);
    Tensor ids = Tensor::empty({batch, width}, DType::i32);
    for (int64_t b = 0; b < batch; ++b)
      std::copy_n(prompt.data<int32_t>() + b * length + p0, width, ids.data<int32_t>() + b * width);
    logits = model.prefill(state, ids, {}, chunk);
    const double done = double(p0 + width), rate = done * double(batch) / timer.seconds();
    std::fprintf(stderr, "prefill %lld/%lld positions, %.0f tok/s, ETA %.0f s\n", (long long)(p0 + width),
                 (long long)length, rate, (double(length) - done) * double(batch) / rate);
  }
  return logits;
}

void run_bench(const BenchArgs& args) {
  apply_common_options(args.common);
  MAMBA_CHECK(!args.model_dir.empty() || !args.shape.empty(), "bench: give -m DIR or --shape NAME");
  MAMBA_CHECK(args.prompt_tokens >= 1, "-p: expected a prompt length ≥ 1, got ", args.prompt_tokens);
  MAMBA_CHECK(args.gen_tokens >= 0, "-g: expected a token count ≥ 0, got ", args.gen_tokens);
  MAMBA_CHECK(args.reps >= 1, "--reps: expected ≥ 1, got ", args.reps);
  MAMBA_CHECK(args.warmup >= 0, "--warmup: expected ≥ 0, got ", args.warmup);
  MAMBA_CHECK(args.batch >= 1, "--batch: expected ≥ 1, got ", args.batch);
  MAMBA_CHECK(args.chunk >= 1, "--chunk: expected a chunk length ≥ 1, got ", args.chunk);
  model::LoadOptions options = load_options(args.common);
  std::unique_ptr<model::LanguageModel> model;
  if (!args.model_dir.empty()) {
    model = model::LanguageModel::load(args.model_dir, options);
  } else {
    model = model::LanguageModel::initialize(model::preset_config(args.shape, "--shape"), args.seed, options.device);
    if (!options.keep_stored_dtype) model->convert_weight_matrices(options.weight_dtype);
  }
  model->lay_out_for_decode();
  model->set_inference_recording(!args.no_graph);
  using DecodeStack = model::LanguageModel::DecodeStack;
  model->set_decode_stack(args.decode_stack == "on"    ? DecodeStack::wherever_taken
                          : args.decode_stack == "off" ? DecodeStack::never
                                                       : DecodeStack::where_faster);
  const int64_t vocab = model->config().vocab_size;
  Rng rng(args.seed);
  const int64_t batch = args.batch;
  Tensor prompt = Tensor::empty({batch, args.prompt_tokens}, DType::i32);
  for (int64_t i = 0; i < prompt.numel(); ++i) prompt.data<int32_t>()[i] = int32_t(rng.below(uint64_t(vocab)));

  // Rates count the tokens of the whole batch; a step is one token for every sequence.
  std::vector<double> prefill_rates, decode_rates, floor_rates;
  int64_t state_bytes = 0;
  // On the CPU, each repetition also measures the decode floor: the time all threads take to read
  // the weights once, right after the decode it bounds.
  const bool measure_floor = model->device() == Device::cpu && args.gen_tokens > 0;
  const std::vector<std::span<const std::byte>> weights =
      measure_floor ? decode_weights(*model) : std::vector<std::span<const std::byte>>{};
  int64_t weight_bytes = 0;
  for (const auto& w : weights) weight_bytes += int64_t(w.size());
  // Untimed prefills of the prompt's first chunk before the repetitions, as llama-bench warms up:
  // they fill the caches and, on CUDA, record the chunk's graph (at the second of its shape), so
  // the repetitions time what a program that prefills many prompts sees.
  const int64_t warm_width = std::min(args.prompt_tokens, args.chunk);
  Tensor warm_prompt = Tensor::empty({batch, warm_width}, DType::i32);
  for (int64_t b = 0; b < batch; ++b)
    std::copy_n(prompt.data<int32_t>() + b * args.prompt_tokens, warm_width,
                warm_prompt.data<int32_t>() + b * warm_width);
  for (int64_t w = 0; w < args.warmup; ++w) {
    model::InferenceState state = model->new_state(batch);
    on_host(ops::argmax_rows(model->prefill(state, warm_prompt, {}, args.chunk), vocab));
  }
  for (int64_t rep = 0; rep < args.reps; ++rep) {
    model::InferenceState state = model->new_state(batch);
    state_bytes = state.bytes() / batch;
    Timer timer;
    // Greedy decoding with the argmax where the logits are. By default (greedy_steps) the steps
    // feed each other on the device and the host queues them all, as the official benchmark's
    // generation loop does; --sync-each-token copies each step's ids back before the next.
    Tensor tokens = on_host(ops::argmax_rows(prefill_showing_progress(*model, state, prompt, args.chunk), vocab));
    prefill_rates.push_back(double(batch * args.prompt_tokens) / timer.seconds());
    timer.reset();
    if (args.sync_each_token) {
      for (int64_t g = 0; g < args.gen_tokens; ++g)
        tokens = on_host(ops::argmax_rows(model->step(state, tokens), vocab));
    } else {
      (void)model->greedy_steps(state, tokens, args.gen_tokens);
    }
    if (args.gen_tokens > 0) decode_rates.push_back(double(batch * args.gen_tokens) / timer.seconds());
    if (measure_floor) floor_rates.push_back(double(batch) / seconds_to_read(weights, 3));
    std::fprintf(stderr, "rep %lld/%lld: pp%lld %.1f tok/s, tg%lld %.1f tok/s", (long long)rep + 1,
                 (long long)args.reps, (long long)args.prompt_tokens, prefill_rates.back(), (long long)args.gen_tokens,
                 decode_rates.empty() ? 0.0 : decode_rates.back());
    if (measure_floor) std::fprintf(stderr, " (floor %.1f tok/s)", floor_rates.back());
    std::fprintf(stderr, "\n");
  }
  // The floor's rate is tokens per second when a step only reads the weights.
  const double floor_tok_s = measure_floor ? summarize(floor_rates).median : 0.0;
  Summary pp = summarize(prefill_rates);
  Summary tg = decode_rates.empty() ? Summary{0, 0, 0} : summarize(decode_rates);
  std::string dtype = dtype_name(model->parameter("backbone.layers.0.mixer.in_proj.weight").value.dtype());
  std::string name = args.shape.empty() ? args.model_dir : args.shape;
  if (args.json) {
    nlohmann::json j = {{"model", name},
                        {"dtype", dtype},
                        {"device", device_name(model->device())},
                        {"threads", num_threads()},
                        {"batch", batch},
                        {"cuda_graph", model->device() == Device::cuda && !args.no_graph},
                        {"sync_each_token", args.sync_each_token},
                        {"prompt_tokens", args.prompt_tokens},
                        {"gen_tokens", args.gen_tokens},
                        {"reps", args.reps},
                        {"warmup_prefills", args.warmup},
                        {"prefill_tok_s", pp.median},
                        {"prefill_tok_s_min", pp.min},
                        {"prefill_tok_s_max", pp.max},
                        {"decode_tok_s", tg.median},
                        {"decode_tok_s_min", tg.min},
                        {"decode_tok_s_max", tg.max},
                        {"prefill_ms", 1e3 * double(batch * args.prompt_tokens) / pp.median},
                        {"decode_ms_per_step", tg.median > 0 ? 1e3 * double(batch) / tg.median : 0.0},
                        {"state_mib", state_bytes / 1048576.0},
                        {"weights_mib", double(weight_bytes) / 1048576.0},
                        {"decode_floor_tok_s", floor_tok_s},
                        {"weights_read_gb_s", floor_tok_s * double(weight_bytes) / double(batch) / 1e9},
                        {"decode_fraction_of_floor", floor_tok_s > 0 ? tg.median / floor_tok_s : 0.0},
                        {"peak_rss_mib", peak_rss_mib()}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  const char* device = device_name(model->device());
  std::printf(
      "| model | dtype | device | threads | batch | test | tok/s (median) | min | max |\n"
      "|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %s | %s | %d | %lld | pp%lld | %.1f | %.1f | %.1f |\n", name.c_str(), dtype.c_str(), device,
              num_threads(), (long long)batch, (long long)args.prompt_tokens, pp.median, pp.min, pp.max);
  if (args.gen_tokens > 0)
    std::printf("| %s | %s | %s | %d | %lld | tg%lld | %.1f | %.1f | %.1f |\n", name.c_str(), dtype.c_str(), device,
                num_threads(), (long long)batch, (long long)args.gen_tokens, tg.median, tg.min, tg.max);
  std::printf("state %.2f MiB per sequence, peak RSS %.1f MiB\n", state_bytes / 1048576.0, peak_rss_mib());
  if (measure_floor)
    std::printf(
        "decode floor %.1f tok/s (%.0f MiB of weights read at %.1f GB/s, measured beside each repetition): "
        "decode at %.0f%% of it\n",
        floor_tok_s, double(weight_bytes) / 1048576.0, floor_tok_s * double(weight_bytes) / double(batch) / 1e9,
        100.0 * tg.median / floor_tok_s);
}

CommandRegistration registration(80, [](CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Prefill and decode speed of a checkpoint or a random model of a shape");
  auto model = cmd->add_option("-m,--model", args->model_dir, "Model folder");
  auto shape = cmd->add_option("--shape", args->shape, "Random model of a published shape: 130m|370m|790m|1.4b|2.8b");
  model->excludes(shape);
  cmd->add_option("--batch", args->batch, "Sequences prefilled and decoded together (default 1)");
  cmd->add_option("-p", args->prompt_tokens, "Prompt tokens (only the last position's logits are computed)");
  cmd->add_option("-g", args->gen_tokens, "Decode steps");
  cmd->add_option("--reps", args->reps, "Repetitions (medians are reported)");
  cmd->add_option("--warmup", args->warmup,
                  "Untimed prefills of the prompt's first chunk before the repetitions (default 2: on CUDA the "
                  "second records the chunk's graph)");
  cmd->add_option("--chunk", args->chunk, "Prefill chunk length");
  cmd->add_option("--seed", args->seed, "Seed of the random model and prompt");
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->add_flag("--no-graph", args->no_graph,
                "CUDA: run every prefill chunk and decode step eagerly instead of replaying CUDA graphs");
  cmd->add_option(
         "--decode-stack", args->decode_stack,
         "CUDA, up to 16 sequences: run all layers of a decode step as one kernel where that is expected to be "
         "faster (auto), wherever the kernel takes the shapes (on), or never (off)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_flag("--sync-each-token", args->sync_each_token,
                "Copy each step's chosen ids to the host before the next step (by default the steps take the "
                "argmax where the logits are and the ids come back once, as the official benchmark decodes)");
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_bench(*args); });
});

}  // namespace
}  // namespace mamba::cli

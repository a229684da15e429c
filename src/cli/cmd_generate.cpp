// mambacpp generate: prefill prompts, then sample new tokens one recurrence step at a time.
#include <cstdio>

#include "cli/command.h"
#include "generate/generator.h"
#include "generate/state_file.h"
#include "tokenizer/tokenizer.h"

namespace mamba::cli {
namespace {

struct GenerateArgs {
  CommonOptions common;
  std::string model_dir, prompt, ids, prompts_file, tokenizer, load_state, save_state;
  int64_t max_new_tokens = 64;
  generate::SamplingParams sampling;
  bool ignore_eos = false, print_ids = false, skip_special = false;
};

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

void run_generate(const GenerateArgs& args) {
  apply_common_options(args.common);
  auto model = model::LanguageModel::load(args.model_dir, load_options(args.common));
  model->lay_out_for_decode();
  // The tokenizer is needed for text in or out; ids in with --print-ids need none.
  bool needs_tokenizer = !args.prompt.empty() || !args.print_ids;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (needs_tokenizer) tok = tokenizer::resolve_tokenizer(args.model_dir, args.tokenizer, model->vocab_rows());

  std::vector<std::vector<int32_t>> prompts;
  if (!args.prompt.empty()) prompts.push_back(tok->encode(args.prompt));
  if (!args.ids.empty()) prompts.push_back(parse_id_list(args.ids, "--ids"));
  if (!args.prompts_file.empty()) {
    std::string what = "--prompts-file " + args.prompts_file;
    for (const std::string& line : split_lines(read_text_file(args.prompts_file, what)))
      prompts.push_back(args.print_ids ? parse_id_list(line, what) : tok->encode(line));
    MAMBA_CHECK(!prompts.empty(), what, ": no prompts (one per line)");
  }
  MAMBA_CHECK(!prompts.empty(), "generate: give --prompt, --ids or --prompts-file");

  generate::GenerateOptions options;
  options.max_new_tokens = args.max_new_tokens;
  options.sampling = args.sampling;
  options.ignore_eos = args.ignore_eos;
  options.eos_token_id = model->config().eos_token_id;

  // A single text prompt streams as it is generated; a batch prints each completion at the end.
  bool stream = !args.print_ids && prompts.size() == 1;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  if (stream) decoder = std::make_unique<tokenizer::StreamDecoder>(*tok, args.skip_special);
  MAMBA_CHECK(args.save_state.empty() || prompts.size() == 1, "--save-state: works with one prompt, got ",
              prompts.size());
  generate::GenerateStats stats;
  model::InferenceState state = args.load_state.empty() ? model->new_state(int64_t(prompts.size()))
                                                        : generate::load_state(args.load_state, *model);
  auto outputs = generate::generate(
      *model, prompts, options,
      [&](int64_t, int32_t token) {
        if (!stream) return;
        std::string text = decoder->feed(token);
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      },
      &stats);
  if (stream) {
    std::string rest = decoder->flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    for (const auto& ids : outputs) {
      if (args.print_ids) {
        for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? "," : "", ids[i]);
      } else {
        std::string text = tok->decode(ids, args.skip_special);
        std::fwrite(text.data(), 1, text.size(), stdout);
      }
      std::fputc('\n', stdout);
    }
  }
  std::fflush(stdout);  // the text comes before the speed line, also when both go to one file
  std::fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tok/s); %lld new tokens, decode %.3f s (%.1f tok/s)\n",
               (long long)stats.prompt_tokens, stats.prefill_seconds,
               stats.prompt_tokens / std::max(stats.prefill_seconds, 1e-9), (long long)stats.new_tokens,
               stats.decode_seconds, stats.decode_tokens / std::max(stats.decode_seconds, 1e-9));
}

CommandRegistration registration(30, [](CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text or token ids from prompts");
  cmd->add_option("-m,--model", args->model_dir, "Model folder")->required();
  auto prompt = cmd->add_option("--prompt", args->prompt, "Prompt text");
  auto ids = cmd->add_option("--ids", args->ids, "Prompt token ids, e.g. 1,2,3");
  auto file = cmd->add_option("--prompts-file", args->prompts_file,
                              "One prompt per line (text, or ids with --print-ids), run as one batch");
  prompt->excludes(ids)->excludes(file);
  ids->excludes(file);
  cmd->add_option("-n", args->max_new_tokens, "New tokens per prompt");
  cmd->add_option("--temperature", args->sampling.temperature, "0 = greedy");
  cmd->add_option("--top-k", args->sampling.top_k, "Keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", args->sampling.top_p, "Nucleus sampling mass (1 = off)");
  cmd->add_option("--min-p", args->sampling.min_p, "Drop tokens below min_p × the top probability (0 = off)");
  cmd->add_option("--repeat-penalty", args->sampling.repeat_penalty, "Penalty for tokens already seen (1 = off)");
  cmd->add_option("--seed", args->sampling.seed, "Random seed");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Keep going past the end-of-sequence token");
  cmd->add_flag("--print-ids", args->print_ids, "Print the new ids, one comma-separated line per prompt");
  cmd->add_flag("--skip-special", args->skip_special, "Leave special tokens out of printed text");
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json path or `bytes` (default: beside the model)");
  cmd->add_option("--load-state", args->load_state, "Continue from a recurrent state saved by --save-state");
  cmd->add_option("--save-state", args->save_state, "Save the recurrent state after generating (safetensors)");
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_generate(*args); });
});

}  // namespace
}  // namespace mamba::cli

// `mambacpp eval`: loss, perplexity and bits per byte (bits per token for token files) of a model
// on a whole file, read as consecutive windows of --seq-len tokens; or accuracy on a synthetic
// task's fixed evaluation set (--task).
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/data_options.h"
#include "core/error.h"
#include "model/language_model.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/trainer.h"

namespace mamba::cli {
namespace {

struct EvalFlags {
  CommonOptions common;
  std::string model_dir;
  DataFlags data;
  int64_t seq_len = 512, batch = 4, max_batches = 0;
  bool json = false;
};

std::unique_ptr<train::DataSource> make_eval_data(const EvalFlags& f, int64_t vocab) {
  MAMBA_CHECK(f.data.path.empty() != f.data.task.empty(), "eval: give exactly one of --data and --task");
  if (!f.data.task.empty()) {
    return train::make_task_source(task_options(f.data, 0));
  }
  MAMBA_CHECK(f.seq_len >= 1, "--seq-len: must be at least 1, got ", f.seq_len);
  std::vector<int32_t> tokens;
  train::Metric metric = train::Metric::bits_per_token;
  double bytes_per_token = 0;
  if (f.data.format == "bytes") {
    tokens = train::read_byte_tokens(f.data.path);
    metric = train::Metric::bits_per_byte;
    bytes_per_token = 1;
  } else if (f.data.format == "tokens") {
    tokens = train::read_token_file(f.data.path, f.data.token_bytes, vocab);
  } else if (f.data.format == "text") {
    std::unique_ptr<tokenizer::Tokenizer> tok = tokenizer::resolve_tokenizer(f.model_dir, f.data.tokenizer, vocab);
    std::string text = train::read_text_file(f.data.path);
    tokens = tok->encode(text);
    MAMBA_CHECK(!tokens.empty(), "--data '", f.data.path, "': the tokenizer produced no tokens");
    bytes_per_token = double(text.size()) / double(tokens.size());
  } else {
    fail("--data-format: unknown format '", f.data.format, "' (expected bytes, tokens or text)");
  }
  MAMBA_CHECK(tokens.size() >= 2, "--data '", f.data.path, "': needs at least 2 tokens, has ", tokens.size());
  // A short file is read as one window.
  train::StreamOptions stream{std::min<int64_t>(f.seq_len, int64_t(tokens.size()) - 1), 0.0, 0};
  return train::make_stream_source(std::move(tokens), vocab, metric, bytes_per_token, stream,
                                   "--data '" + f.data.path + "'");
}

void run_eval(const EvalFlags& f) {
  apply_common_options(f.common);
  MAMBA_CHECK(!f.model_dir.empty(), "-m/--model: required (a checkpoint folder)");
  MAMBA_CHECK(f.batch >= 1, "--batch: must be at least 1, got ", f.batch);
  MAMBA_CHECK(f.max_batches >= 0, "--max-batches: must be non-negative, got ", f.max_batches);
  model::LoadOptions load = load_options(f.common);
  std::unique_ptr<model::LanguageModel> model = model::LanguageModel::load(f.model_dir, load);
  int64_t vocab = model->config().vocab_size;
  std::unique_ptr<train::DataSource> data = make_eval_data(f, vocab);
  MAMBA_CHECK(data->vocab() <= model->vocab_rows(), "the data uses ids up to ", data->vocab() - 1, " but the model '",
              f.model_dir, "' has ", model->vocab_rows(), " embedding rows");
  train::EvalResult result = train::evaluate(*model, *data, f.batch, f.max_batches);
  if (f.json) {
    nlohmann::json j = result.to_json();
    j["model"] = f.model_dir;
    j["data"] = data->describe();
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("data        %s\nscored      %lld targets\nloss        %.6f nats\nperplexity  %.4f\n",
              data->describe().c_str(), (long long)result.count, result.loss, std::exp(result.loss));
  if (result.bits_per_byte) std::printf("bits/byte   %.6f\n", *result.bits_per_byte);
  if (result.bits_per_token) std::printf("bits/token  %.6f\n", *result.bits_per_token);
  if (result.accuracy) std::printf("accuracy    %.4f\n", *result.accuracy);
}

CommandRegistration registration(61, [](CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  EvalFlags& f = *flags;
  CLI::App* cmd = app.add_subcommand("eval", "Loss, perplexity and bits per byte of a model on a file or task");
  add_common_options(*cmd, f.common);
  cmd->add_option("-m,--model", f.model_dir, "Checkpoint folder");
  add_data_options(*cmd, f.data, "File to evaluate on (all of it)",
                   "For --data-format text (default: the model folder's tokenizer.json)");
  cmd->add_option("--seq-len", f.seq_len, "Window length (default 512)");
  cmd->add_option("--batch", f.batch, "Windows per forward pass (default 4)");
  cmd->add_option("--max-batches", f.max_batches, "Stop after this many batches, 0 = all (default 0)");
  cmd->add_flag("--json", f.json, "Print one JSON object");
  cmd->callback([flags] { run_eval(*flags); });
});

}  // namespace
}  // namespace mamba::cli

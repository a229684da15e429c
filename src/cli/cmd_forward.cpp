// mambacpp forward: logits of one sequence, written as a safetensors file.
#include <cstdio>

#include "cli/command.h"
#include "generate/generator.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace mamba::cli {
namespace {

struct ForwardArgs {
  CommonOptions common;
  std::string model_dir, ids, ids_file, text, tokenizer, out;
  bool last_only = false;
};

void run_forward(const ForwardArgs& args) {
  apply_common_options(args.common);
  auto model = model::LanguageModel::load(args.model_dir, load_options(args.common));
  std::vector<int32_t> ids;
  if (!args.ids.empty()) ids = parse_id_list(args.ids, "--ids");
  if (!args.ids_file.empty())
    ids = parse_id_list(read_text_file(args.ids_file, "--ids-file"), "--ids-file " + args.ids_file);
  if (!args.text.empty())
    ids = tokenizer::resolve_tokenizer(args.model_dir, args.tokenizer, model->vocab_rows())->encode(args.text);
  MAMBA_CHECK(!ids.empty(), "forward: no token ids (give --ids, --ids-file or --text)");
  generate::check_token_ids(ids, model->vocab_rows(), "forward");
  Tensor batch = Tensor::empty({1, int64_t(ids.size())}, DType::i32);
  std::copy(ids.begin(), ids.end(), batch.data<int32_t>());
  Tensor logits = on_host(model->forward(batch, args.last_only));
  logits = logits.view({logits.size(1), logits.size(2)});
  io::write_safetensors(args.out, {{"logits", logits}});
  std::fprintf(stderr, "wrote logits %s to %s\n", shape_string(logits.shape()).c_str(), args.out.c_str());
}

CommandRegistration registration(20, [](CLI::App& app) {
  auto args = std::make_shared<ForwardArgs>();
  CLI::App* cmd = app.add_subcommand("forward", "Logits of one sequence, written as float32 `logits` [n, vocab]");
  cmd->add_option("-m,--model", args->model_dir, "Model folder")->required();
  auto ids = cmd->add_option("--ids", args->ids, "Token ids, e.g. 1,2,3");
  auto ids_file = cmd->add_option("--ids-file", args->ids_file, "File of token ids separated by commas/whitespace");
  auto text = cmd->add_option("--text", args->text, "Text, encoded with the model's tokenizer");
  ids->excludes(ids_file)->excludes(text);
  ids_file->excludes(text);
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json path or `bytes` (default: beside the model)");
  cmd->add_flag("--last-only", args->last_only, "Only the last position's logits ([1, vocab])");
  cmd->add_option("--out", args->out, "Output .safetensors file")->required();
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_forward(*args); });
});

}  // namespace
}  // namespace mamba::cli

// mambacpp info -m DIR: what a checkpoint is, without running it.
#include <cstdio>

#include "cli/command.h"
#include "io/checkpoint.h"

namespace mamba::cli {
namespace {

struct InfoArgs {
  CommonOptions common;
  std::string model_dir;
};

void run_info(const InfoArgs& args) {
  apply_common_options(args.common);
  model::LoadOptions options = load_options(args.common);
  options.device = Device::cpu;  // describing a model needs no GPU
  io::Checkpoint checkpoint = io::load_checkpoint(args.model_dir);
  auto model = model::LanguageModel::from_checkpoint(checkpoint, options);
  const io::ModelConfig& c = model->config();
  std::map<std::string, int64_t> bytes_by_dtype;
  for (const model::Parameter& p : model->parameters())
    bytes_by_dtype[dtype_name(p.value.dtype())] += int64_t(p.value.nbytes());
  std::printf("model        %s (%s checkpoint: %s)\n", c.model_type.c_str(), c.dialect.c_str(),
              checkpoint.weights_path.c_str());
  std::printf("layers       %lld × d_model %lld, d_inner %lld, d_state %lld, d_conv %lld, dt_rank %lld\n",
              (long long)c.n_layer, (long long)c.d_model, (long long)c.d_inner, (long long)c.d_state,
              (long long)c.d_conv, (long long)c.dt_rank);
  std::printf("vocabulary   %lld tokens, %lld embedding rows%s\n", (long long)c.vocab_size,
              (long long)model->vocab_rows(), c.tie_embeddings ? " (LM head tied)" : "");
  std::printf("parameters   %lld (%.2f M)\n", (long long)model->parameter_count(), model->parameter_count() / 1e6);
  std::printf("weights      %.2f MiB in memory:", model->parameter_bytes() / 1048576.0);
  for (auto& [name, n] : bytes_by_dtype) std::printf(" %s %.2f MiB", name.c_str(), n / 1048576.0);
  std::printf("\nstate        %.3f MiB per sequence (constant in context length)\n",
              model->new_state(1).bytes() / 1048576.0);
  std::printf("eos id       %lld\n", (long long)c.eos_token_id);
}

CommandRegistration registration(10, [](CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a checkpoint: config, parameter count, dtype, memory");
  cmd->add_option("-m,--model", args->model_dir, "Model folder (config.json + weights)")->required();
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_info(*args); });
});

}  // namespace
}  // namespace mamba::cli

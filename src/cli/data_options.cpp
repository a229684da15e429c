#include "cli/data_options.h"

namespace mamba::cli {

void add_data_options(CLI::App& command, DataFlags& flags, const std::string& data_help,
                      const std::string& tokenizer_help) {
  command.add_option("--data", flags.path, data_help);
  command.add_option("--data-format", flags.format, "bytes | tokens | text (default bytes)");
  command.add_option("--tokenizer", flags.tokenizer, tokenizer_help);
  command.add_option("--token-bytes", flags.token_bytes, "Bytes per id in a token file: 2 or 4 (default 2)");
  command.add_option("--task", flags.task, "Synthetic task instead of a file: selective-copying | induction-heads");
  command.add_option("--task-len", flags.task_len, "Task length L (default 256)");
  command.add_option("--task-tokens", flags.task_tokens, "Selective copying: data tokens M (default 16)");
  command.add_option("--task-vocab", flags.task_vocab, "Task vocabulary (default 16)");
}

train::TaskOptions task_options(const DataFlags& flags, uint64_t seed) {
  train::TaskOptions task;
  task.kind = train::task_kind_from_name(flags.task, "--task");
  task.length = flags.task_len;
  task.tokens = flags.task_tokens;
  task.vocab = flags.task_vocab;
  task.seed = seed;
  return task;
}

}  // namespace mamba::cli

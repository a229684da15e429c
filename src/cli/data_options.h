// The data flags `train` and `eval` share: a file (--data, --data-format, --tokenizer,
// --token-bytes) or a synthetic task (--task, --task-len, --task-tokens, --task-vocab).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "train/data.h"

namespace mamba::cli {

struct DataFlags {
  std::string path, format = "bytes", tokenizer;
  int token_bytes = 2;
  std::string task;
  int64_t task_len = 256, task_tokens = 16, task_vocab = 16;
};

void add_data_options(CLI::App& command, DataFlags& flags, const std::string& data_help,
                      const std::string& tokenizer_help);
// The task --task names, drawn from `seed`.
train::TaskOptions task_options(const DataFlags& flags, uint64_t seed);

}  // namespace mamba::cli

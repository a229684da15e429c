// Each subcommand lives in its own file and registers itself here, so adding one touches
// no other file. A registration adds a CLI11 subcommand and its callback.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "model/language_model.h"

namespace mamba::cli {

using CommandSetup = std::function<void(CLI::App& app)>;

struct CommandRegistration {
  CommandRegistration(int order, CommandSetup setup);  // lower order is listed first in --help
};

// Options every command takes: --threads and --dtype.
struct CommonOptions {
  int threads = 0;     // 0: all cores
  std::string dtype;   // "" keeps the checkpoint's precision; f32 | bf16 converts on load
  std::string device;  // "" picks the GPU when there is one
};
void add_common_options(CLI::App& command, CommonOptions& options);
// Applies --threads; call first in every callback.
void apply_common_options(const CommonOptions& options);
// The device (--device, else the GPU when one is present) and weight precision (--dtype) to load with.
model::LoadOptions load_options(const CommonOptions& options);

// Token ids separated by commas and/or whitespace ("1,2, 3\n4"); `what` names the flag or file.
std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what);
std::string read_text_file(const std::string& path, const std::string& what);

}  // namespace mamba::cli

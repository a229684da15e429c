// mambacpp: the command-line front end. Every failure ends in one line on stderr and exit code 1.
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "cli/command.h"
#include "core/error.h"
#include "core/threads.h"

namespace mamba::cli {

static std::multimap<int, CommandSetup>& registry() {
  static std::multimap<int, CommandSetup> commands;
  return commands;
}

CommandRegistration::CommandRegistration(int order, CommandSetup setup) { registry().emplace(order, std::move(setup)); }

void add_common_options(CLI::App& command, CommonOptions& options) {
  command.add_option("--threads", options.threads, "CPU threads (default: all cores)")->check(CLI::NonNegativeNumber);
  command.add_option("--dtype", options.dtype, "Weight precision in memory: f32 or bf16 (default: as stored)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  command.add_option("--device", options.device, "cpu or cuda (default: cuda when a GPU is present)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
}

void apply_common_options(const CommonOptions& options) { set_num_threads(options.threads); }

model::LoadOptions load_options(const CommonOptions& options) {
  model::LoadOptions load;
  load.device = options.device.empty() ? (cuda_available() ? Device::cuda : Device::cpu)
                                       : device_from_name(options.device, "--device");
  if (!options.dtype.empty()) {
    load.keep_stored_dtype = false;
    load.weight_dtype = dtype_from_name(options.dtype, "--dtype");
  }
  return load;
}

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == ',' || std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && text[end] != ',' && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    std::string piece = text.substr(i, end - i);
    char* stop = nullptr;
    errno = 0;
    long long value = std::strtoll(piece.c_str(), &stop, 10);
    MAMBA_CHECK(stop && *stop == '\0' && errno == 0, what, ": '", piece, "' is not a token id");
    MAMBA_CHECK(value >= 0, what, ": token id ", value, " is negative");
    MAMBA_CHECK(value <= INT32_MAX, what, ": token id ", value, " is too large");
    ids.push_back(int32_t(value));
    i = end;
  }
  return ids;
}

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  MAMBA_CHECK(in.good(), what, ": cannot open '", path, "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace mamba::cli

int main(int argc, char** argv) {
  CLI::App app{"mambacpp: Mamba selective state-space models in C++ (inference and training)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mambacpp 0.1");
  for (auto& [order, setup] : mamba::cli::registry()) setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mamba::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

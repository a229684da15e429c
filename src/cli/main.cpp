// mambacpp: the command-line front end. Every failure ends in one line on stderr and exit code 1.
#include <cstdio>
#include <map>

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

// mambacpp tokenize | detokenize: text -> ids and ids -> text with a tokenizer.json or bytes.
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/command.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace mamba::cli {
namespace {

struct TokenizeOptions {
  CommonOptions common;
  std::string tokenizer, text, file;
  bool json = false, no_parse_special = false;
};

struct DetokenizeOptions {
  CommonOptions common;
  std::string tokenizer, ids;
  bool skip_special = false;
};

std::string read_file(const std::string& path) {
  std::error_code error;
  MAMBA_CHECK(!std::filesystem::is_directory(path, error), "--file ", path, ": is a folder, expected a text file");
  std::ifstream file(path, std::ios::binary);
  MAMBA_CHECK(file, "--file ", path, ": cannot open it");
  std::ostringstream contents;
  contents << file.rdbuf();
  MAMBA_CHECK(!file.bad(), "--file ", path, ": read error");
  return contents.str();
}

// "1,2, 3" -> {1, 2, 3}; empty gives none.
std::vector<int32_t> parse_ids(const std::string& list) {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (start < list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    size_t first = start, last = end;
    while (first < last && list[first] == ' ') ++first;
    while (last > first && list[last - 1] == ' ') --last;
    int64_t id = 0;
    const auto [stop, error] = std::from_chars(list.data() + first, list.data() + last, id);
    MAMBA_CHECK(first < last && error == std::errc() && stop == list.data() + last && id >= 0 && id <= INT32_MAX,
                "--ids: \"", list.substr(start, end - start), "\" is not a token id (expected comma-separated ",
                "non-negative integers, e.g. 1,2,3)");
    ids.push_back(int32_t(id));
    start = end + 1;
  }
  return ids;
}

void run_tokenize(const TokenizeOptions& options) {
  apply_common_options(options.common);
  const auto tokenizer = tokenizer::load_tokenizer(options.tokenizer);
  const std::string text = options.file.empty() ? options.text : read_file(options.file);
  const std::vector<int32_t> ids = tokenizer->encode(text, !options.no_parse_special);
  std::string line = options.json ? "[" : "";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) line += options.json ? ", " : ",";
    line += std::to_string(ids[i]);
  }
  if (options.json) line += "]";
  std::printf("%s\n", line.c_str());
}

void run_detokenize(const DetokenizeOptions& options) {
  apply_common_options(options.common);
  const auto tokenizer = tokenizer::load_tokenizer(options.tokenizer);
  const std::string text = tokenizer->decode(parse_ids(options.ids), options.skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
}

const CommandRegistration tokenize_registration(50, [](CLI::App& app) {
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* command = app.add_subcommand("tokenize", "Print the token ids of a text");
  command->add_option("--tokenizer", options->tokenizer, "tokenizer.json (or its folder), or 'bytes'")->required();
  auto* text = command->add_option("--text", options->text, "Text to encode (UTF-8)");
  auto* file = command->add_option("--file", options->file, "File whose contents to encode");
  text->excludes(file);
  command->add_flag("--json", options->json, "Print a JSON array instead of comma-separated ids");
  command->add_flag("--no-parse-special", options->no_parse_special,
                    "Encode special tokens such as <|endoftext|> as ordinary text");
  add_common_options(*command, options->common);
  command->callback([options, text, file] {
    MAMBA_CHECK(text->count() + file->count() == 1, "tokenize: give the text with --text T or --file F");
    run_tokenize(*options);
  });
});

const CommandRegistration detokenize_registration(51, [](CLI::App& app) {
  auto options = std::make_shared<DetokenizeOptions>();
  CLI::App* command = app.add_subcommand("detokenize", "Print the text of token ids (no newline added)");
  command->add_option("--tokenizer", options->tokenizer, "tokenizer.json (or its folder), or 'bytes'")->required();
  command->add_option("--ids", options->ids, "Comma-separated token ids, e.g. 1,2,3")->required();
  command->add_flag("--skip-special", options->skip_special, "Leave special tokens out");
  add_common_options(*command, options->common);
  command->callback([options] { run_detokenize(*options); });
});

}  // namespace
}  // namespace mamba::cli

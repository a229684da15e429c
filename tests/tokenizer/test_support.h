// Shared by the tokenizer tests: the GPT-NeoX-20B tokenizer and its vectors from the golden
// fixtures, each loaded once per process (nullptr when the fixtures folder is absent), a small
// byte-level tokenizer.json built in memory, and a temporary folder that removes itself.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer::testing {

inline std::string fixture_path(const std::string& name) { return std::string(MAMBACPP_FIXTURES) + "/" + name; }

inline std::string neox_tokenizer_path() { return fixture_path("gpt-neox-20b-tokenizer.json"); }

inline const Tokenizer* neox_tokenizer() {
  static const std::unique_ptr<Tokenizer> tokenizer =
      std::filesystem::exists(neox_tokenizer_path()) ? load_tokenizer(neox_tokenizer_path()) : nullptr;
  return tokenizer.get();
}

inline const nlohmann::json* neox_vectors() {
  static const std::unique_ptr<nlohmann::json> vectors = []() -> std::unique_ptr<nlohmann::json> {
    std::ifstream file(fixture_path("tokenizer_vectors.json"));
    if (!file) return nullptr;
    return std::make_unique<nlohmann::json>(nlohmann::json::parse(file));
  }();
  return vectors.get();
}

// The single-byte token of each byte in the byte-level alphabet.
inline std::string byte_token(int byte) {
  const bool printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255);
  int shifted = 0;
  for (int b = 0; b < byte; ++b) shifted += !((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174));
  std::string text;
  append_utf8(text, printable ? char32_t(byte) : char32_t(256 + shifted));
  return text;
}

// A small tokenizer.json: the 256 byte tokens with id = byte value, then `extra` tokens.
inline nlohmann::json small_tokenizer(const std::vector<std::string>& extra, const nlohmann::json& merges) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_token(b)] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + int(i);
  return nlohmann::json{{"version", "1.0"},
                        {"added_tokens", nlohmann::json::array()},
                        {"normalizer", nullptr},
                        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                        {"post_processor", nullptr},
                        {"decoder", {{"type", "ByteLevel"}}},
                        {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"vocab", vocab}, {"merges", merges}}}};
}

class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& contents) const {
    std::ofstream(file(name), std::ios::binary) << contents;
    return file(name);
  }

 private:
  static int& counter() {
    static int next = 0;
    return next;
  }
  std::filesystem::path path_;
};

}  // namespace mamba::tokenizer::testing

#define SKIP_WITHOUT_NEOX_FIXTURES()                                                                  \
  if (!::mamba::tokenizer::testing::neox_tokenizer() || !::mamba::tokenizer::testing::neox_vectors()) \
  GTEST_SKIP() << "tokenizer fixtures not found under " << MAMBACPP_FIXTURES

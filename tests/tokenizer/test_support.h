// Shared by the tokenizer tests: the GPT-NeoX-20B tokenizer and its vectors from the golden
// fixtures, each loaded once per process (nullptr when the fixtures folder is absent), and a
// temporary folder that removes itself.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/tokenizer.h"

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

// Shared by the tokenizer tests: the GPT-NeoX-20B tokenizer and its vectors from the golden
// fixtures, each loaded once per process; nullptr when the fixtures folder is absent.
#pragma once
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

}  // namespace mamba::tokenizer::testing

#define SKIP_WITHOUT_NEOX_FIXTURES()                                                                  \
  if (!::mamba::tokenizer::testing::neox_tokenizer() || !::mamba::tokenizer::testing::neox_vectors()) \
  GTEST_SKIP() << "tokenizer fixtures not found under " << MAMBACPP_FIXTURES

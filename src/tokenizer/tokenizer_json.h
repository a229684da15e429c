// Reading a Hugging Face tokenizer.json quickly: the two big tables, model.vocab (token string ->
// id) and model.merges (either "a b" strings or ["a", "b"] pairs), are streamed into flat lists;
// everything else becomes an ordinary JSON tree. A JSON syntax error, a vocabulary id that is not
// an integer, or a merge of another shape is a mamba::Error naming the file.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace mamba::tokenizer {

struct TokenizerJson {
  nlohmann::json root;  // the file without model.vocab and model.merges
  bool has_vocab = false, has_merges = false;
  std::vector<std::pair<std::string, int64_t>> vocab;       // in file order
  std::vector<std::pair<std::string, std::string>> merges;  // (left, right) in rank order
};

TokenizerJson read_tokenizer_json(const std::string& path);

}  // namespace mamba::tokenizer

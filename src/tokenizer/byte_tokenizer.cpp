#include "tokenizer/byte_tokenizer.h"

#include <array>

namespace mamba::tokenizer {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text, bool) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string_view ByteTokenizer::token_bytes(int32_t id) const {
  static const std::array<char, 256> all_bytes = [] {
    std::array<char, 256> table{};
    for (int b = 0; b < 256; ++b) table[b] = char(b);
    return table;
  }();
  check_id(id);
  return std::string_view(all_bytes.data() + id, 1);
}

std::string ByteTokenizer::token_text(int32_t id) const { return std::string(token_bytes(id)); }

std::optional<int32_t> ByteTokenizer::token_id(std::string_view token_text) const {
  if (token_text.size() != 1) return std::nullopt;
  return static_cast<unsigned char>(token_text[0]);
}

}  // namespace mamba::tokenizer

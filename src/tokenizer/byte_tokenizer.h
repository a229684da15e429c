// The byte tokenizer of byte-level models (MambaByte): id = byte value, 256 ids, no special
// tokens. encode accepts any bytes, valid UTF-8 or not, and decode_bytes gives them back exactly;
// decode repairs ill-formed UTF-8 with U+FFFD like every tokenizer here.
#pragma once
#include "tokenizer/tokenizer.h"

namespace mamba::tokenizer {

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const override;
  int64_t size() const override { return 256; }
  bool is_special(int32_t id) const override { return false; }
  std::string_view token_bytes(int32_t id) const override;
  std::string token_text(int32_t id) const override;
  std::optional<int32_t> token_id(std::string_view token_text) const override;
  const std::string& source() const override { return source_; }

 private:
  std::string source_ = "bytes";
};

}  // namespace mamba::tokenizer

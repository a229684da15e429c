// Text <-> token ids.
//
// Contract, matching Hugging Face `tokenizers` (Tokenizer.encode(text, add_special_tokens=False)
// and Tokenizer.decode(ids, skip_special_tokens)):
//   encode(text) -> ids. `text` must be well-formed UTF-8 (else mamba::Error naming the byte
//     offset), except for the byte tokenizer, which takes any bytes. With parse_special, added
//     tokens marked special are found in the text before anything else and never split; without
//     it they are ordinary text (like `encode_special_tokens=True` in `tokenizers`).
//   decode(ids) -> text: the tokens' bytes joined, with every ill-formed UTF-8 part replaced by
//     U+FFFD (Rust's from_utf8_lossy rules, see unicode.h); with skip_special, special tokens are
//     left out. An id outside [0, size()) is a mamba::Error.
//   decode(encode(s)) == normalized(s) for the BPE tokenizer (NFC for GPT-NeoX), == s for bytes.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mamba::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const = 0;
  // Number of ids: every id in [0, size()) has a token.
  virtual int64_t size() const = 0;
  virtual bool is_special(int32_t id) const = 0;
  // The raw bytes a token stands for (not necessarily whole UTF-8 characters).
  virtual std::string_view token_bytes(int32_t id) const = 0;
  // The token as written in its vocabulary (e.g. "Ġthe" for byte-level BPE).
  virtual std::string token_text(int32_t id) const = 0;
  // The id of a token written as in its vocabulary, e.g. "<|endoftext|>".
  virtual std::optional<int32_t> token_id(std::string_view token_text) const = 0;
  // What was loaded, for messages: "bytes" or the tokenizer.json path.
  virtual const std::string& source() const = 0;

  // Tokens' bytes joined, without UTF-8 repair.
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // Throws mamba::Error unless 0 <= id < size().
  void check_id(int64_t id) const;
};

// Incremental decoding for streamed generation. The concatenation of everything feed() and
// flush() return equals decode(all ids, skip_special); feed() never returns part of a character:
// bytes of an unfinished UTF-8 sequence wait for the next token.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  // The text that became printable with this token (possibly empty).
  std::string feed(int32_t id);
  // The rest: an unfinished sequence at the end becomes U+FFFD. The decoder can be reused.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes of an unfinished character
};

// "bytes" gives the byte tokenizer; a directory means its tokenizer.json; otherwise a
// tokenizer.json file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path_or_bytes);

// The tokenizer for a model folder: `tokenizer_option` (--tokenizer PATH|bytes) when given, else
// model_dir/tokenizer.json, else the byte tokenizer when the model's vocabulary is 256; otherwise
// an error that says how to pass one. When model_vocab > 0, a tokenizer with more ids than the
// model's embedding has rows is an error.
std::unique_ptr<Tokenizer> resolve_tokenizer(const std::string& model_dir, const std::string& tokenizer_option,
                                             int64_t model_vocab);

}  // namespace mamba::tokenizer

// Unicode helpers for the tokenizers: UTF-8 validation and decoding, lossy repair, character
// classes and normalization (for non-ASCII text these come from ICU; a build without ICU refuses
// non-ASCII text with a clear error).
//
// UTF-8 is read by the rules of Rust's `String::from_utf8_lossy`, which is what Hugging Face
// `tokenizers` uses to turn decoded bytes into text: a well-formed sequence (no overlong forms, no
// surrogates, nothing above U+10FFFF) is one character; otherwise the longest prefix of a
// well-formed sequence found at that position (at least one byte) becomes one U+FFFD. The same
// applies to a sequence cut short by the end of the input.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mamba::tokenizer {

// One step of reading UTF-8 at some position.
struct Utf8Step {
  enum Kind : uint8_t { kValid, kInvalid, kTruncated };
  Kind kind;
  uint8_t length;       // bytes consumed: the character, or the bytes that become one U+FFFD
  char32_t code_point;  // only for kValid
};
// Reads the sequence starting at bytes[0]; `available` >= 1.
Utf8Step read_utf8(const unsigned char* bytes, size_t available);

// Byte offset of the first byte that is not part of well-formed UTF-8, or std::string_view::npos.
size_t find_invalid_utf8(std::string_view text);

// `bytes` with every ill-formed part replaced by U+FFFD, as described above.
std::string utf8_lossy(std::string_view bytes);

// Length of the prefix of `bytes` that ends before an unfinished (but so far well-formed)
// sequence at the very end; bytes.size() when there is none. Text up to there can be repaired
// and printed now without changing the result once more bytes arrive.
size_t utf8_complete_prefix(std::string_view bytes);

void append_utf8(std::string& out, char32_t code_point);

// The character classes of the GPT-2 split pattern: \p{L}, \p{N}, \s (White_Space), the rest.
enum class CharClass : uint8_t { kLetter, kNumber, kWhitespace, kOther };
CharClass char_class(char32_t code_point);
// char_class of each ASCII character, for loops that handle ASCII themselves.
const std::array<CharClass, 128>& ascii_char_classes();

enum class NormalizationForm : uint8_t { kNone, kNFC, kNFD, kNFKC, kNFKD };
// `text` (well-formed UTF-8) in the given normalization form: `text` itself when it is already
// in that form (no copy), else a view of `storage`, which then holds the normalized text.
std::string_view normalize(std::string_view text, NormalizationForm form, std::string& storage);

}  // namespace mamba::tokenizer

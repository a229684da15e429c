#include "tokenizer/pretokenizer.h"

#include <algorithm>
#include <array>
#include <cstdint>

#include "tokenizer/unicode.h"

namespace mamba::tokenizer {

namespace {

struct Char {
  char32_t code_point;
  CharClass char_class;
  size_t offset;  // of its first byte in the text
};

// Length in characters of the contraction ('s 't 're 've 'm 'll 'd) at chars[i], or 0.
size_t contraction_length(const std::vector<Char>& chars, size_t i) {
  if (chars[i].code_point != U'\'' || i + 1 >= chars.size()) return 0;
  const char32_t first = chars[i + 1].code_point;
  if (first == U's' || first == U't' || first == U'm' || first == U'd') return 2;
  if (i + 2 >= chars.size()) return 0;
  const char32_t second = chars[i + 2].code_point;
  if ((first == U'r' && second == U'e') || (first == U'v' && second == U'e') || (first == U'l' && second == U'l'))
    return 3;
  return 0;
}

// The end (exclusive, in characters) of the piece starting at chars[start].
size_t piece_end(const std::vector<Char>& chars, size_t start) {
  const size_t n = chars.size();
  if (size_t length = contraction_length(chars, start)) return start + length;
  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional space, then a run of one class.
  size_t run_start = start;
  if (chars[start].code_point == U' ' && start + 1 < n && chars[start + 1].char_class != CharClass::kWhitespace)
    run_start = start + 1;
  const CharClass run_class = chars[run_start].char_class;
  if (run_class != CharClass::kWhitespace) {
    size_t end = run_start + 1;
    while (end < n && chars[end].char_class == run_class) ++end;
    return end;
  }
  // "\s+(?!\S)" then "\s+": the whole run at the end of the text; before other text the run
  // minus its last character, or the single character when the run has only one.
  size_t end = start;
  while (end < n && chars[end].char_class == CharClass::kWhitespace) ++end;
  if (end == n || end - start == 1) return end;
  return end - 1;
}

// Where to cut a long text so that splitting the parts separately gives the same pieces: after
// a '\n' that has an ASCII non-whitespace character on both sides. Only whitespace runs contain
// '\n', and this run of one character is a piece on its own both before more text and at the end
// of a part; nothing in the pattern looks behind. Cutting keeps the per-character buffer small.
size_t part_end(std::string_view text, size_t from, size_t part_bytes) {
  auto ascii_non_space = [&](size_t i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    return byte < 0x80 && char_class(byte) != CharClass::kWhitespace;
  };
  for (size_t at = from + std::min(part_bytes, text.size()); at < text.size();) {
    const size_t newline = text.find('\n', at);
    if (newline == std::string_view::npos || newline + 1 >= text.size()) break;
    if (ascii_non_space(newline - 1) && ascii_non_space(newline + 1)) return newline + 1;
    at = newline + 1;
  }
  return text.size();
}

void split_part(std::string_view text, std::vector<std::string_view>& pieces) {
  thread_local std::vector<Char> chars;
  chars.clear();
  const std::array<CharClass, 128>& ascii_classes = ascii_char_classes();
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    if (bytes[i] < 0x80) {  // the common case, without the general decoder
      chars.push_back({bytes[i], ascii_classes[bytes[i]], i});
      ++i;
      continue;
    }
    const Utf8Step step = read_utf8(bytes + i, text.size() - i);
    chars.push_back({step.code_point, char_class(step.code_point), i});
    i += step.length;
  }
  for (size_t start = 0; start < chars.size();) {
    const size_t end = piece_end(chars, start);
    const size_t end_offset = end < chars.size() ? chars[end].offset : text.size();
    pieces.push_back(text.substr(chars[start].offset, end_offset - chars[start].offset));
    start = end;
  }
}

}  // namespace

void split_gpt2(std::string_view text, std::vector<std::string_view>& pieces, size_t part_bytes) {
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = part_end(text, begin, part_bytes);
    split_part(text.substr(begin, end - begin), pieces);
    begin = end;
  }
}

}  // namespace mamba::tokenizer

#include "tokenizer/unicode.h"

#ifdef MAMBACPP_ICU
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#endif

#include <array>

#include "core/error.h"

namespace mamba::tokenizer {

namespace {

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

// The allowed range of the second byte of a sequence, which rules out overlong forms,
// surrogates and code points above U+10FFFF (Unicode Table 3-7).
struct LeadInfo {
  uint8_t length;  // 0: never a lead byte
  unsigned char second_lo, second_hi;
};

LeadInfo lead_info(unsigned char lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

}  // namespace

Utf8Step read_utf8(const unsigned char* bytes, size_t available) {
  const unsigned char lead = bytes[0];
  if (lead < 0x80) return {Utf8Step::kValid, 1, lead};
  const LeadInfo info = lead_info(lead);
  if (info.length == 0) return {Utf8Step::kInvalid, 1, 0};
  if (available < 2) return {Utf8Step::kTruncated, 1, 0};
  if (bytes[1] < info.second_lo || bytes[1] > info.second_hi) return {Utf8Step::kInvalid, 1, 0};
  char32_t code_point = lead & (0x7F >> info.length);
  code_point = (code_point << 6) | (bytes[1] & 0x3F);
  for (uint8_t k = 2; k < info.length; ++k) {
    if (available <= k) return {Utf8Step::kTruncated, k, 0};
    if (!is_continuation(bytes[k])) return {Utf8Step::kInvalid, k, 0};
    code_point = (code_point << 6) | (bytes[k] & 0x3F);
  }
  return {Utf8Step::kValid, info.length, code_point};
}

size_t find_invalid_utf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    if (bytes[i] < 0x80) {
      ++i;
      continue;
    }
    const Utf8Step step = read_utf8(bytes + i, text.size() - i);
    if (step.kind != Utf8Step::kValid) return i;
    i += step.length;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes_view) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(bytes_view.data());
  std::string out;
  out.reserve(bytes_view.size());
  size_t i = 0;
  while (i < bytes_view.size()) {
    const Utf8Step step = read_utf8(bytes + i, bytes_view.size() - i);
    if (step.kind == Utf8Step::kValid)
      out.append(bytes_view.data() + i, step.length);
    else
      out += "\xEF\xBF\xBD";
    i += step.length;
  }
  return out;
}

size_t utf8_complete_prefix(std::string_view bytes_view) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(bytes_view.data());
  // A sequence is at most 4 bytes, so only the last 3 bytes can start an unfinished one; but a
  // byte that looks like a lead may be the tail of an earlier error chunk, so walk from a
  // position that is certainly a chunk boundary: the start, or just after an ASCII byte.
  size_t i = bytes_view.size() > 4 ? bytes_view.size() - 4 : 0;
  while (i > 0 && bytes[i - 1] >= 0x80) --i;
  while (i < bytes_view.size()) {
    const Utf8Step step = read_utf8(bytes + i, bytes_view.size() - i);
    if (step.kind == Utf8Step::kTruncated) return i;
    i += step.length;
  }
  return bytes_view.size();
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

#ifdef MAMBACPP_ICU
static CharClass non_ascii_char_class(char32_t cp) {
  const uint32_t category_mask = U_GET_GC_MASK(UChar32(cp));
  if (category_mask & U_GC_L_MASK) return CharClass::kLetter;
  if (category_mask & U_GC_N_MASK) return CharClass::kNumber;
  if (u_isUWhiteSpace(UChar32(cp))) return CharClass::kWhitespace;
  return CharClass::kOther;
}
#else
[[noreturn]] static void fail_without_icu() {
  fail(
      "tokenizer: non-ASCII text needs Unicode tables, but this build of mambacpp has no ICU (libicu-dev was "
      "missing when it was built; scripts/setup.sh installs it). ASCII text and --tokenizer bytes work.");
}
static CharClass non_ascii_char_class(char32_t) { fail_without_icu(); }
#endif

const std::array<CharClass, 128>& ascii_char_classes() {
  // Letters and digits are the only ASCII members of \p{L} and \p{N}; White_Space in ASCII is
  // U+0009..U+000D and the space.
  static const std::array<CharClass, 128> table = [] {
    std::array<CharClass, 128> classes{};
    for (char32_t c = 0; c < 128; ++c) {
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        classes[c] = CharClass::kLetter;
      else if (c >= '0' && c <= '9')
        classes[c] = CharClass::kNumber;
      else if ((c >= 0x09 && c <= 0x0D) || c == ' ')
        classes[c] = CharClass::kWhitespace;
      else
        classes[c] = CharClass::kOther;
    }
    return classes;
  }();
  return table;
}

CharClass char_class(char32_t cp) { return cp < 128 ? ascii_char_classes()[cp] : non_ascii_char_class(cp); }

std::string_view normalize(std::string_view text, NormalizationForm form, std::string& storage) {
  if (form == NormalizationForm::kNone) return text;
  bool ascii = true;
  for (char c : text) ascii &= (static_cast<unsigned char>(c) < 0x80);
  if (ascii) return text;  // ASCII is unchanged by every normalization form

#ifndef MAMBACPP_ICU
  (void)storage;
  fail_without_icu();
#else
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case NormalizationForm::kNFC:
      normalizer = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalizationForm::kNFD:
      normalizer = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalizationForm::kNFKC:
      normalizer = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalizationForm::kNFKD:
      normalizer = icu::Normalizer2::getNFKDInstance(status);
      break;
    case NormalizationForm::kNone:
      break;
  }
  MAMBA_CHECK(U_SUCCESS(status) && normalizer, "ICU: cannot load normalization data: ", u_errorName(status));
  const icu::StringPiece piece(text.data(), int32_t(text.size()));
  if (normalizer->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return text;
  status = U_ZERO_ERROR;
  storage.clear();
  storage.reserve(text.size());
  icu::StringByteSink<std::string> sink(&storage);
  normalizer->normalizeUTF8(0, piece, sink, nullptr, status);
  MAMBA_CHECK(U_SUCCESS(status), "ICU: normalization failed: ", u_errorName(status));
  return storage;
#endif
}

}  // namespace mamba::tokenizer

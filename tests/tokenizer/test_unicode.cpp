// UTF-8 reading and repair, character classes, normalization.
#include <gtest/gtest.h>
#include <unicode/ustring.h>

#include "core/rng.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

std::string repeat(const std::string& text, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += text;
  return out;
}

TEST(TokenizerUnicode, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(utf8_lossy("plain ASCII"), "plain ASCII");
  EXPECT_EQ(utf8_lossy("\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x8D\x95"), "\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x8D\x95");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x8D"), kReplacement);                 // cut short: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xC0\x80"), repeat(kReplacement, 2));          // overlong
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), repeat(kReplacement, 3));      // surrogate
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), repeat(kReplacement, 4));  // above U+10FFFF
  EXPECT_EQ(utf8_lossy("\xE1\x80\x41"), kReplacement + "A");
  // The example of the Unicode Standard, section 3.9 (U+FFFD substitution of maximal subparts).
  EXPECT_EQ(utf8_lossy("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a" + repeat(kReplacement, 3) + "b" + kReplacement + "c" + repeat(kReplacement, 2) + "d");
}

// ICU's converter substitutes the same way; compare on random bytes biased towards UTF-8 shapes.
TEST(TokenizerUnicode, LossyMatchesIcuOnRandomBytes) {
  Rng rng(7);
  const unsigned char interesting[] = {0x41, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF,
                                       0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes;
    const int length = int(rng.below(12));
    for (int i = 0; i < length; ++i)
      bytes += char(rng.below(2) ? interesting[rng.below(sizeof interesting)] : rng.below(256));
    UErrorCode status = U_ZERO_ERROR;
    std::u16string utf16(bytes.size() + 1, u'\0');
    int32_t utf16_length = 0;
    u_strFromUTF8WithSub(utf16.data(), int32_t(utf16.size()), &utf16_length, bytes.data(), int32_t(bytes.size()),
                         0xFFFD, nullptr, &status);
    ASSERT_TRUE(U_SUCCESS(status));
    std::string expected(utf16_length * 3, '\0');
    int32_t expected_length = 0;
    u_strToUTF8(expected.data(), int32_t(expected.size()), &expected_length, utf16.data(), utf16_length, &status);
    ASSERT_TRUE(U_SUCCESS(status));
    expected.resize(expected_length);
    const std::string repaired = utf8_lossy(bytes);
    EXPECT_EQ(repaired, expected);
    EXPECT_EQ(find_invalid_utf8(repaired), std::string_view::npos);
    EXPECT_EQ(find_invalid_utf8(bytes) == std::string_view::npos, repaired == bytes);
  }
}

TEST(TokenizerUnicode, FindInvalidGivesOffset) {
  EXPECT_EQ(find_invalid_utf8("abc"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("ab\xFF"), 2u);
  EXPECT_EQ(find_invalid_utf8("\xC3\xA9\xC3"), 2u);
  EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);
}

TEST(TokenizerUnicode, CompletePrefixHoldsBackOnlyUnfinishedCharacters) {
  EXPECT_EQ(utf8_complete_prefix("ab"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xE4\xB8"), 2u);
  EXPECT_EQ(utf8_complete_prefix("\xE4\xB8\xAD"), 3u);
  EXPECT_EQ(utf8_complete_prefix("\xF0\x9F\x8D"), 0u);
  EXPECT_EQ(utf8_complete_prefix("\xC3"), 0u);
  EXPECT_EQ(utf8_complete_prefix("a\xFF"), 2u);         // invalid, not unfinished
  EXPECT_EQ(utf8_complete_prefix("\x80\xC3"), 1u);      // stray continuation, then a lead
  EXPECT_EQ(utf8_complete_prefix("\xE4\xB8\xE4"), 2u);  // "\xE4\xB8" is an error chunk already
  EXPECT_EQ(utf8_complete_prefix("\xC3\xA9\xC3\xA9\xC3\xA9\xF0\x9F"), 6u);
}

TEST(TokenizerUnicode, CharClassesFollowUnicodeCategories) {
  EXPECT_EQ(char_class(U'a'), CharClass::kLetter);
  EXPECT_EQ(char_class(U'é'), CharClass::kLetter);
  EXPECT_EQ(char_class(U'中'), CharClass::kLetter);
  EXPECT_EQ(char_class(U'ʰ'), CharClass::kLetter);  // Lm
  EXPECT_EQ(char_class(U'7'), CharClass::kNumber);
  EXPECT_EQ(char_class(U'٣'), CharClass::kNumber);  // Nd, Arabic-Indic
  EXPECT_EQ(char_class(U'²'), CharClass::kNumber);  // No
  EXPECT_EQ(char_class(U'Ⅻ'), CharClass::kNumber);  // Nl
  for (char32_t space :
       {U' ', U'\t', U'\n', U'\v', U'\f', U'\r', char32_t(0x85), char32_t(0xA0), char32_t(0x2028), char32_t(0x3000)})
    EXPECT_EQ(char_class(space), CharClass::kWhitespace) << uint32_t(space);
  for (char32_t other :
       {U'!', U'\'', char32_t(0x200B), char32_t(0xFEFF), char32_t(0x0301), char32_t(0x1F355), char32_t(0)})
    EXPECT_EQ(char_class(other), CharClass::kOther) << uint32_t(other);
}

std::string normalized(const std::string& text, NormalizationForm form) {
  std::string storage;
  return std::string(normalize(text, form, storage));
}

TEST(TokenizerUnicode, NormalizeComposesAndDecomposes) {
  const std::string decomposed = "e\xCC\x81";  // e + COMBINING ACUTE
  EXPECT_EQ(normalized(decomposed, NormalizationForm::kNFC), "\xC3\xA9");
  EXPECT_EQ(normalized("\xC3\xA9", NormalizationForm::kNFD), decomposed);
  EXPECT_EQ(normalized("\xEF\xBC\xA6", NormalizationForm::kNFKC), "F");  // fullwidth F
  EXPECT_EQ(normalized("\xEF\xBC\xA6", NormalizationForm::kNFC), "\xEF\xBC\xA6");
  EXPECT_EQ(normalized(decomposed, NormalizationForm::kNone), decomposed);
  // Text already in the form comes back as itself, without a copy.
  std::string storage;
  const std::string composed = "caf\xC3\xA9 na\xC3\xAFve";
  EXPECT_EQ(normalize(composed, NormalizationForm::kNFC, storage).data(), composed.data());
  EXPECT_EQ(normalize(decomposed, NormalizationForm::kNFC, storage).data(), storage.data());
}

}  // namespace
}  // namespace mamba::tokenizer

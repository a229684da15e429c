// The GPT-2 split pattern, matched by hand.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer {
namespace {

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string_view> pieces;
  split_gpt2(text, pieces);
  return {pieces.begin(), pieces.end()};
}

using Pieces = std::vector<std::string>;

TEST(TokenizerPretokenizer, SplitsLikeTheGpt2Pattern) {
  EXPECT_EQ(split(""), Pieces{});
  EXPECT_EQ(split("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("abc123!!?x"), (Pieces{"abc", "123", "!!?", "x"}));
  EXPECT_EQ(split(" 42 ?! z"), (Pieces{" 42", " ?!", " z"}));
  EXPECT_EQ(split("it's I'M we'll 'x"), (Pieces{"it", "'s", " I", "'", "M", " we", "'ll", " '", "x"}));
  EXPECT_EQ(split("a're've'd'm't"), (Pieces{"a", "'re", "'ve", "'d", "'m", "'t"}));
  EXPECT_EQ(split("?'s"), (Pieces{"?'", "s"}));  // a punctuation run swallows the apostrophe
}

TEST(TokenizerPretokenizer, WhitespaceRunsLeaveOneSpaceForTheNextWord) {
  EXPECT_EQ(split("a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(split("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(split("x   "), (Pieces{"x", "   "}));
  EXPECT_EQ(split(" "), (Pieces{" "}));
  EXPECT_EQ(split("a \n b"), (Pieces{"a", " \n", " b"}));
  EXPECT_EQ(split("\n\nword"), (Pieces{"\n", "\n", "word"}));
  EXPECT_EQ(split("a\tb"), (Pieces{"a", "\t", "b"}));
  EXPECT_EQ(split("a \tb"), (Pieces{"a", " ", "\t", "b"}));
  // Only U+0020 joins the next word; other White_Space characters stand alone.
  EXPECT_EQ(split("x\xC2\xA0y"), (Pieces{"x", "\xC2\xA0", "y"}));
  EXPECT_EQ(split("\xE4\xB8\xAD\xE6\x96\x87 text"), (Pieces{"\xE4\xB8\xAD\xE6\x96\x87", " text"}));
}

// Pieces are never empty and always give the text back.
TEST(TokenizerPretokenizer, PiecesCoverRandomText) {
  Rng rng(11);
  const char32_t alphabet[] = {U'a',
                               U'Z',
                               U'7',
                               U' ',
                               U'\n',
                               U'\t',
                               U'\'',
                               U's',
                               U'!',
                               U'.',
                               char32_t(0xA0),
                               char32_t(0x3000),
                               U'é',
                               U'中',
                               char32_t(0x0301),
                               char32_t(0x1F355),
                               U'٣'};
  for (int trial = 0; trial < 500; ++trial) {
    std::string text;
    const int length = int(rng.below(30));
    for (int i = 0; i < length; ++i) append_utf8(text, alphabet[rng.below(std::size(alphabet))]);
    std::string joined;
    for (const std::string& piece : split(text)) {
      EXPECT_FALSE(piece.empty());
      joined += piece;
    }
    EXPECT_EQ(joined, text);
  }
}

// Long texts are split in parts at some newlines; the pieces must be those of the whole text.
TEST(TokenizerPretokenizer, SplittingInPartsChangesNothing) {
  Rng rng(17);
  const char32_t alphabet[] = {U'a', U'7', U' ', U'\n', U'\n', U'\n', U'\t', U'\'', U's', U'!', U'é', char32_t(0x3000)};
  for (int trial = 0; trial < 100; ++trial) {
    std::string text;
    for (int i = 0; i < 300; ++i) append_utf8(text, alphabet[rng.below(std::size(alphabet))]);
    std::vector<std::string_view> whole, in_parts;
    split_gpt2(text, whole, text.size());
    split_gpt2(text, in_parts, /*part_bytes=*/1 + rng.below(8));
    EXPECT_EQ(in_parts, whole);
  }
}

}  // namespace
}  // namespace mamba::tokenizer

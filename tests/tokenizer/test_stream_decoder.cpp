// Incremental decoding: the same text as decode(), never half a character.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/rng.h"
#include "test_support.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer {
namespace {

using Ids = std::vector<int32_t>;

// Streams `ids` and checks every piece is well-formed UTF-8; returns the joined text.
std::string stream(const Tokenizer& tokenizer, const Ids& ids, bool skip_special) {
  StreamDecoder decoder(tokenizer, skip_special);
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = decoder.feed(id);
    EXPECT_EQ(find_invalid_utf8(piece), std::string_view::npos);
    text += piece;
  }
  return text + decoder.flush();
}

TEST(TokenizerStreamDecoder, EmojiSplitOverTokensComesOutWhole) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  StreamDecoder decoder(*testing::neox_tokenizer());
  // "I love 🍕": the emoji's four bytes come in three tokens.
  EXPECT_EQ(decoder.feed(42), "I");
  EXPECT_EQ(decoder.feed(2389), " love");
  EXPECT_EQ(decoder.feed(22692), " ");
  EXPECT_EQ(decoder.feed(224), "");
  EXPECT_EQ(decoder.feed(232), "\xF0\x9F\x8D\x95");
  EXPECT_EQ(decoder.feed(22692), " ");
  EXPECT_EQ(decoder.flush(), "\xEF\xBF\xBD");  // an unfinished character at the end
  EXPECT_EQ(decoder.flush(), "");
}

TEST(TokenizerStreamDecoder, MatchesDecodeOnVectorsAndRandomIds) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  const Tokenizer& tokenizer = *testing::neox_tokenizer();
  for (const auto& vector : (*testing::neox_vectors())["vectors"]) {
    const Ids ids = vector["ids"];
    EXPECT_EQ(stream(tokenizer, ids, false), vector["decoded"].get<std::string>());
    EXPECT_EQ(stream(tokenizer, ids, true), vector["decoded_skip_special"].get<std::string>());
  }
  // Random ids, half of them from 2..244, where GPT-NeoX keeps its single-character tokens, so
  // that characters are split and ill-formed sequences are common.
  Rng rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    Ids ids;
    for (uint64_t i = 0, n = rng.below(20); i < n; ++i)
      ids.push_back(int32_t(rng.below(2) ? rng.below(tokenizer.size()) : 2 + rng.below(243)));
    if (rng.below(4) == 0) ids.push_back(0);
    EXPECT_EQ(stream(tokenizer, ids, false), tokenizer.decode(ids));
    EXPECT_EQ(stream(tokenizer, ids, true), tokenizer.decode(ids, true));
  }
}

TEST(TokenizerStreamDecoder, ByteTokenizerRandomBytes) {
  const ByteTokenizer tokenizer;
  Rng rng(9);
  for (int trial = 0; trial < 500; ++trial) {
    Ids ids;
    for (uint64_t i = 0, n = rng.below(16); i < n; ++i) ids.push_back(int32_t(rng.below(256)));
    EXPECT_EQ(stream(tokenizer, ids, false), tokenizer.decode(ids));
  }
  StreamDecoder decoder(tokenizer);
  EXPECT_THROW(decoder.feed(256), Error);
}

}  // namespace
}  // namespace mamba::tokenizer

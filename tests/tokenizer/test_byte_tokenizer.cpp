// The byte tokenizer: id = byte, any bytes in, the same bytes out.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/rng.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer {
namespace {

using Ids = std::vector<int32_t>;

TEST(TokenizerByteTokenizer, AnyBytesRoundTripExactly) {
  const ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.size(), 256);
  Rng rng(13);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes;
    for (uint64_t i = 0, n = rng.below(32); i < n; ++i) bytes += char(rng.below(256));
    const Ids ids = tokenizer.encode(bytes);
    ASSERT_EQ(ids.size(), bytes.size());
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(bytes[i]));
    EXPECT_EQ(tokenizer.decode_bytes(ids), bytes);
    EXPECT_EQ(tokenizer.decode(ids), utf8_lossy(bytes));
  }
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("h\xC3\xA9llo")), "h\xC3\xA9llo");
  EXPECT_EQ(tokenizer.decode(Ids{104, 0xC3}), "h\xEF\xBF\xBD");
  EXPECT_FALSE(tokenizer.is_special(0));
  EXPECT_EQ(tokenizer.token_id("A"), 65);
  EXPECT_THROW(tokenizer.decode(Ids{256}), Error);
  EXPECT_THROW(tokenizer.decode(Ids{-3}), Error);
}

}  // namespace
}  // namespace mamba::tokenizer

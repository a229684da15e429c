// The GPT-NeoX-20B tokenizer against every vector `tokenizers` produced for it.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace mamba::tokenizer {
namespace {

using testing::neox_tokenizer;
using testing::neox_vectors;

TEST(TokenizerBpeVectors, EncodeGivesExactIdsAndTokens) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  const Tokenizer& tokenizer = *neox_tokenizer();
  ASSERT_EQ(tokenizer.size(), 50277);
  int checked = 0;
  for (const auto& vector : (*neox_vectors())["vectors"]) {
    const std::string text = vector["text"];
    const std::vector<int32_t> expected = vector["ids"];
    const std::vector<int32_t> ids = tokenizer.encode(text);
    EXPECT_EQ(ids, expected) << "text: " << text;
    if (ids != expected) continue;
    for (size_t i = 0; i < ids.size(); ++i)
      EXPECT_EQ(tokenizer.token_text(ids[i]), vector["tokens"][i].get<std::string>()) << "text: " << text;
    ++checked;
  }
  EXPECT_EQ(checked, 64);
}

TEST(TokenizerBpeVectors, DecodeGivesExactText) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  const Tokenizer& tokenizer = *neox_tokenizer();
  for (const auto& vector : (*neox_vectors())["vectors"]) {
    const std::vector<int32_t> ids = vector["ids"];
    EXPECT_EQ(tokenizer.decode(ids), vector["decoded"].get<std::string>());
    EXPECT_EQ(tokenizer.decode(ids, /*skip_special=*/true), vector["decoded_skip_special"].get<std::string>());
  }
}

}  // namespace
}  // namespace mamba::tokenizer

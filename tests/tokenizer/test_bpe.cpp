// Byte-level BPE behaviour: round trips, invalid input, special tokens, merge order, the
// tokenizer.json options that are supported and the ones that are refused.
#include <gtest/gtest.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "core/error.h"
#include "core/rng.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer {
namespace {

using nlohmann::json;
using testing::neox_tokenizer;
using testing::small_tokenizer;
using testing::TempDir;
using Ids = std::vector<int32_t>;

// NFC through ICU's UTF-16 interface, independent of the tokenizer's UTF-8 path.
std::string icu_nfc(const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  icu::UnicodeString composed = nfc->normalize(icu::UnicodeString::fromUTF8(text), status);
  EXPECT_TRUE(U_SUCCESS(status));
  std::string out;
  composed.toUTF8String(out);
  return out;
}

// Random well-formed UTF-8 drawn from ASCII, whitespace, accents (composed and combining), many
// scripts, emoji, any scalar value, special-token text and space runs.
std::string random_text(Rng& rng) {
  static const std::vector<std::string> fragments = {
      "<|endoftext|>", "<|padding|>", "<|endoftext", "    ", "   \n", "\r\n", "'s", "'LL", "\xEF\xBB\xBF"};
  static const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E},     {0x09, 0x0D},     {0xA0, 0x17F},    {0x300, 0x36F},     {0x370, 0x3FF},    {0x400, 0x4FF},
      {0x590, 0x6FF},   {0x900, 0x97F},   {0xE00, 0xE7F},   {0x1100, 0x11FF},   {0x2000, 0x206F},  {0x3040, 0x30FF},
      {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}, {0xFF00, 0xFFEF}, {0x1F300, 0x1F6FF}, {0x1F3FB, 0x1F3FF}};
  std::string text;
  const int length = int(rng.below(40));
  for (int i = 0; i < length; ++i) {
    const uint64_t kind = rng.below(20);
    if (kind == 0) {
      text += fragments[rng.below(fragments.size())];
    } else if (kind == 1) {  // any scalar value
      char32_t code_point;
      do code_point = char32_t(rng.below(0x110000));
      while (code_point >= 0xD800 && code_point <= 0xDFFF);
      append_utf8(text, code_point);
    } else {
      const auto [lo, hi] = ranges[rng.below(ranges.size())];
      append_utf8(text, lo + char32_t(rng.below(hi - lo + 1)));
    }
  }
  return text;
}

TEST(TokenizerBpe, DecodeOfEncodeIsNfcOfRandomText) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  const Tokenizer& tokenizer = *neox_tokenizer();
  Rng rng(2024);
  for (int trial = 0; trial < 400; ++trial) {
    const std::string text = random_text(rng);
    ASSERT_EQ(find_invalid_utf8(text), std::string_view::npos);
    const Ids ids = tokenizer.encode(text);
    EXPECT_EQ(tokenizer.decode(ids), icu_nfc(text)) << "trial " << trial;
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(text, /*parse_special=*/false)), icu_nfc(text)) << "trial " << trial;
  }
}

TEST(TokenizerBpe, InvalidUtf8IsAnErrorNamingTheOffset) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  const Tokenizer& tokenizer = *neox_tokenizer();
  try {
    tokenizer.encode("abc\xC3(");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 (at byte offset 3)"), std::string::npos) << e.what();
  }
  // Random bytes: either an error or, when they happen to be UTF-8, a faithful round trip.
  Rng rng(5);
  int errors = 0;
  for (int trial = 0; trial < 500; ++trial) {
    std::string bytes;
    for (uint64_t i = 0, n = rng.below(16); i < n; ++i) bytes += char(rng.below(2) ? rng.below(128) : rng.below(256));
    if (find_invalid_utf8(bytes) == std::string_view::npos) {
      EXPECT_EQ(tokenizer.decode(tokenizer.encode(bytes)), icu_nfc(bytes));
    } else {
      EXPECT_THROW(tokenizer.encode(bytes), Error);
      ++errors;
    }
  }
  EXPECT_GT(errors, 100);
}

TEST(TokenizerBpe, SpecialTokensAreParsedOnlyWhenAsked) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  const Tokenizer& tokenizer = *neox_tokenizer();
  const std::string text = "a<|endoftext|>b<|padding|>     c";
  const Ids parsed = tokenizer.encode(text);
  const Ids plain = tokenizer.encode(text, /*parse_special=*/false);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), 0), 1);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), 1), 1);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 0) + std::count(plain.begin(), plain.end(), 1), 0);
  // The space runs are added tokens too, but not special: they are matched either way.
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50273), 1);
  EXPECT_EQ(tokenizer.decode(plain), text);
  EXPECT_EQ(tokenizer.decode(parsed, /*skip_special=*/true), "ab     c");

  EXPECT_EQ(tokenizer.token_id("<|endoftext|>"), 0);
  EXPECT_EQ(tokenizer.token_id("Ġthe"), 253);
  EXPECT_EQ(tokenizer.token_id("no such token"), std::nullopt);
  EXPECT_TRUE(tokenizer.is_special(0));
  EXPECT_FALSE(tokenizer.is_special(50254));
  EXPECT_FALSE(tokenizer.is_special(253));
  EXPECT_THROW(tokenizer.decode(Ids{5, 50277}), Error);
  EXPECT_THROW(tokenizer.decode(Ids{-1}), Error);
}

std::unique_ptr<Tokenizer> load_json(const TempDir& dir, const json& root) {
  return load_tokenizer(dir.write("tokenizer.json", root.dump()));
}

TEST(TokenizerBpe, MergesInStringAndPairFormAgree) {
  TempDir dir("mambacpp-bpe");
  const std::vector<std::string> extra = {"he", "ll", "hell", "hello"};
  const auto from_strings = load_json(dir, small_tokenizer(extra, {"h e", "l l", "he ll", "hell o"}));
  const auto from_pairs =
      load_json(dir, small_tokenizer(extra, json::array({json::array({"h", "e"}), json::array({"l", "l"}),
                                                         json::array({"he", "ll"}), json::array({"hell", "o"})})));
  const Ids expected = {259, 32, 258, 32, 256, 108};  // "hello", " ", "hell", " ", "he", "l"
  EXPECT_EQ(from_strings->encode("hello hell hel"), expected);
  EXPECT_EQ(from_pairs->encode("hello hell hel"), expected);
  EXPECT_EQ(from_pairs->decode(expected), "hello hell hel");
}

TEST(TokenizerBpe, LowestRankMergesFirstLeftmostAmongEquals) {
  TempDir dir("mambacpp-bpe");
  const std::vector<std::string> extra = {"ab", "bc", "aa"};
  EXPECT_EQ(load_json(dir, small_tokenizer(extra, {"b c", "a b"}))->encode("abc"), (Ids{97, 257}));
  EXPECT_EQ(load_json(dir, small_tokenizer(extra, {"a b", "b c"}))->encode("abc"), (Ids{256, 99}));
  EXPECT_EQ(load_json(dir, small_tokenizer(extra, {"a a"}))->encode("aaaaa"), (Ids{258, 258, 97}));
}

TEST(TokenizerBpe, OptionsNormalizerPrefixSpaceIgnoreMergesAddedTokens) {
  TempDir dir("mambacpp-bpe");
  json root = small_tokenizer({"ab", "Ġabc"}, {"a b"});
  root["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFD"}}}}};
  root["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(load_json(dir, root)->encode("\xC3\xA9"), (Ids{32, 101, 0xCC, 0x81}));  // " e" + U+0301
  EXPECT_EQ(load_json(dir, root)->encode(" abc"), (Ids{32, 256, 99}));

  root["model"]["ignore_merges"] = true;  // a whole word in the vocabulary wins over merges
  EXPECT_EQ(load_json(dir, root)->encode(" abc"), (Ids{257}));

  root["added_tokens"] = {{{"id", 300}, {"content", "xy"}, {"special", false}, {"normalized", false}},
                          {{"id", 301}, {"content", "xyz"}, {"special", true}, {"normalized", false}},
                          {{"id", 302}, {"content", "yzw"}, {"special", false}, {"normalized", true}}};
  const auto tokenizer = load_json(dir, root);
  EXPECT_EQ(tokenizer->size(), 303);
  EXPECT_EQ(tokenizer->encode("xyzw"), (Ids{301, 32, 119}));  // leftmost, then longest
  // Without special tokens the match "xyz" is dropped and stays text, as in `tokenizers` (the
  // shorter "xy" is not looked for inside it); the normalized token "yzw" is then found in it.
  EXPECT_EQ(tokenizer->encode("xyzw", /*parse_special=*/false), (Ids{32, 120, 302}));
  EXPECT_EQ(tokenizer->decode(Ids{301, 32, 119}, /*skip_special=*/true), " w");
  EXPECT_THROW(tokenizer->decode(Ids{299}), Error);  // a gap between the vocabulary and the added tokens
}

// Bytes without a token become unk_token (runs fused with fuse_unk), or are dropped without one,
// as in `tokenizers`.
TEST(TokenizerBpe, BytesWithoutTokenUseUnk) {
  TempDir dir("mambacpp-bpe");
  json root = small_tokenizer({"<unk>"}, json::array());
  root["model"]["vocab"].erase("z");
  root["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(load_json(dir, root)->encode("azzb"), (Ids{97, 256, 256, 98}));
  root["model"]["fuse_unk"] = true;
  EXPECT_EQ(load_json(dir, root)->encode("azzb"), (Ids{97, 256, 98}));
  root["model"]["unk_token"] = nullptr;
  EXPECT_EQ(load_json(dir, root)->encode("azzb"), (Ids{97, 98}));
  root["model"]["unk_token"] = "<missing>";
  EXPECT_THROW(load_json(dir, root), Error);
}

TEST(TokenizerBpe, RefusedFeaturesAreNamed) {
  TempDir dir("mambacpp-bpe");
  auto expect_refused = [&](const json& root, const std::string& feature) {
    try {
      load_json(dir, root);
      ADD_FAILURE() << "expected an error naming " << feature;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(feature), std::string::npos) << e.what();
    }
  };
  const json base = small_tokenizer({"ab"}, {"a b"});
  json root = base;
  root["model"]["type"] = "Unigram";
  expect_refused(root, "Unigram");
  root = base;
  root["model"]["dropout"] = 0.1;
  expect_refused(root, "dropout");
  root = base;
  root["model"]["byte_fallback"] = true;
  expect_refused(root, "byte_fallback");
  root = base;
  root["model"]["continuing_subword_prefix"] = "##";
  expect_refused(root, "continuing_subword_prefix");
  root = base;
  root["normalizer"] = {{"type", "Lowercase"}};
  expect_refused(root, "Lowercase");
  root = base;
  root["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_refused(root, "Metaspace");
  root = base;
  root["decoder"] = {{"type", "WordPiece"}};
  expect_refused(root, "WordPiece");
  root = base;
  root["added_tokens"] = {{{"id", 0}, {"content", "<s>"}, {"special", true}, {"lstrip", true}}};
  expect_refused(root, "lstrip");
  root = base;
  root["model"]["merges"] = {"a q"};
  expect_refused(root, "not in the vocabulary");
  root = base;
  root["model"]["merges"] = {"a b c"};
  expect_refused(root, "merges[0]");
  expect_refused(json::array(), "\"model\"");
  root = base;
  root.erase("pre_tokenizer");
  expect_refused(root, "pre_tokenizer \"null\"");
  EXPECT_THROW(load_tokenizer(dir.write("broken.json", "{\"model\": ")), Error);
  EXPECT_THROW(load_tokenizer(dir.file("missing.json")), Error);
}

}  // namespace
}  // namespace mamba::tokenizer

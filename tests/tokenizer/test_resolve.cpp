// Finding the tokenizer of a model folder.
#include <gtest/gtest.h>

#include "core/error.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace mamba::tokenizer {
namespace {

using testing::TempDir;

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerResolve, BytesByOptionOrByVocabularyOf256) {
  TempDir model("mambacpp-model");
  EXPECT_EQ(resolve_tokenizer(model.path().string(), "bytes", 0)->source(), "bytes");
  EXPECT_EQ(resolve_tokenizer(model.path().string(), "", 256)->size(), 256);
  const std::string message = error_of([&] { resolve_tokenizer(model.path().string(), "", 50280); });
  EXPECT_NE(message.find("has no tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("--tokenizer PATH"), std::string::npos) << message;
  EXPECT_NE(message.find("--tokenizer bytes"), std::string::npos) << message;
}

TEST(TokenizerResolve, TokenizerJsonNextToTheModelOrByOption) {
  TempDir model("mambacpp-model"), elsewhere("mambacpp-tokenizer");
  const std::string json_path = model.write("tokenizer.json", testing::small_tokenizer({"ab"}, {"a b"}).dump());
  EXPECT_EQ(resolve_tokenizer(model.path().string(), "", 300)->source(), json_path);
  EXPECT_EQ(resolve_tokenizer(model.path().string(), "bytes", 300)->source(), "bytes");
  EXPECT_EQ(resolve_tokenizer(elsewhere.path().string(), model.path().string(), 0)->size(), 257);
  EXPECT_EQ(resolve_tokenizer(elsewhere.path().string(), json_path, 257)->size(), 257);

  std::string message = error_of([&] { resolve_tokenizer(model.path().string(), "", 256); });
  EXPECT_NE(message.find("vocabulary of only 256"), std::string::npos) << message;
  message = error_of([&] { load_tokenizer(elsewhere.path().string()); });
  EXPECT_NE(message.find("has no tokenizer.json"), std::string::npos) << message;
}

// The GPT-NeoX tokenizer fits a Mamba model's padded vocabulary (50280 rows).
TEST(TokenizerResolve, NeoxBesideAMambaModel) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  TempDir model("mambacpp-model");
  std::filesystem::create_symlink(testing::neox_tokenizer_path(), model.file("tokenizer.json"));
  EXPECT_EQ(resolve_tokenizer(model.path().string(), "", 50280)->size(), 50277);
}

}  // namespace
}  // namespace mamba::tokenizer

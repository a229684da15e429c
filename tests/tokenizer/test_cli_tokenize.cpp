// End to end: the mambacpp tool's tokenize and detokenize commands on fixture vectors.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>

#include "test_support.h"

namespace mamba::tokenizer {
namespace {

using testing::TempDir;

struct Result {
  int exit_code;
  std::string out, err;
};

// Runs the tool with `arguments` (already shell-quoted where needed).
Result run_tool(const TempDir& dir, const std::string& arguments) {
  const std::string command = std::string(MAMBACPP_BINARY) + " " + arguments + " 2>" + dir.file("stderr.txt");
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  Result result{-1, {}, {}};
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(dir.file("stderr.txt"));
  result.err.assign(std::istreambuf_iterator<char>(err), {});
  return result;
}

std::string join(const std::vector<int32_t>& ids, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? separator : "") + std::to_string(ids[i]);
  return out;
}

// Each run loads the tokenizer, so GPT-NeoX is used for two vectors and the other cases use the
// byte tokenizer or a small tokenizer.json.
TEST(TokenizerCli, TokenizeAndDetokenizeFixtureVectors) {
  SKIP_WITHOUT_NEOX_FIXTURES();
  TempDir dir("mambacpp-cli");
  const std::string tokenizer = "--tokenizer '" + testing::neox_tokenizer_path() + "'";
  int checked = 0;
  for (const auto& vector : (*testing::neox_vectors())["vectors"]) {
    const std::string text = vector["text"];
    // One with a special token, one with emoji split over tokens.
    const bool special = text == "Hello<|endoftext|>World";
    if (!special && text.find("\xF0\x9F\x91\xA8") != 0) continue;
    const std::vector<int32_t> ids = vector["ids"];
    const std::string file = dir.write("text.txt", text);
    Result result = run_tool(dir, "tokenize " + tokenizer + (special ? " --json" : "") + " --file '" + file + "'");
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(result.out, special ? "[" + join(ids, ", ") + "]\n" : join(ids, ",") + "\n");
    result = run_tool(dir, "detokenize " + tokenizer + (special ? " --skip-special" : "") + " --ids " + join(ids, ","));
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(result.out, vector[special ? "decoded_skip_special" : "decoded"].get<std::string>());
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(TokenizerCli, SpecialTokensAndErrorsWithASmallTokenizer) {
  TempDir dir("mambacpp-cli");
  nlohmann::json root = testing::small_tokenizer({}, nlohmann::json::array());
  root["added_tokens"] = {{{"id", 256}, {"content", "<eos>"}, {"special", true}, {"normalized", false}}};
  const std::string tokenizer = "--tokenizer '" + dir.write("tokenizer.json", root.dump()) + "'";
  Result result = run_tool(dir, "tokenize " + tokenizer + " --text 'a<eos>'");
  EXPECT_EQ(result.out, "97,256\n");
  result = run_tool(dir, "tokenize " + tokenizer + " --no-parse-special --text 'a<eos>'");
  EXPECT_EQ(result.out, "97,60,101,111,115,62\n");
  result = run_tool(dir, "detokenize " + tokenizer + " --ids 97,256");
  EXPECT_EQ(result.out, "a<eos>");
  result = run_tool(dir, "detokenize " + tokenizer + " --skip-special --ids 97,256");
  EXPECT_EQ(result.out, "a");
  result = run_tool(dir, "detokenize " + tokenizer + " --ids 5,257");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("token id 257 is out of range"), std::string::npos) << result.err;
  result = run_tool(dir, "tokenize " + tokenizer + " --file '" + dir.write("bad.txt", "ok\xFF") + "'");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("not valid UTF-8 (at byte offset 2)"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace mamba::tokenizer

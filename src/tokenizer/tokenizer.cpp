#include "tokenizer/tokenizer.h"

#include <filesystem>

#include "core/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer {

namespace fs = std::filesystem;

void Tokenizer::check_id(int64_t id) const {
  MAMBA_CHECK(id >= 0 && id < size(), "token id ", id, " is out of range: tokenizer ", source(), " has ", size(),
              " ids (0..", size() - 1, ")");
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && is_special(id)) continue;
    bytes += token_bytes(id);
  }
  return bytes;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return utf8_lossy(decode_bytes(ids, skip_special));
}

std::string StreamDecoder::feed(int32_t id) {
  tokenizer_.check_id(id);
  if (skip_special_ && tokenizer_.is_special(id)) return {};
  pending_ += tokenizer_.token_bytes(id);
  const size_t complete = utf8_complete_prefix(pending_);
  std::string text = utf8_lossy(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return text;
}

std::string StreamDecoder::flush() {
  std::string text = utf8_lossy(pending_);
  pending_.clear();
  return text;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path_or_bytes) {
  if (path_or_bytes == "bytes") return std::make_unique<ByteTokenizer>();
  fs::path path(path_or_bytes);
  std::error_code error;
  if (fs::is_directory(path, error)) {
    path /= "tokenizer.json";
    MAMBA_CHECK(fs::exists(path, error), "--tokenizer ", path_or_bytes,
                ": the folder has no tokenizer.json (pass the tokenizer.json file itself, or 'bytes')");
  }
  return load_bpe_tokenizer(path.string());
}

std::unique_ptr<Tokenizer> resolve_tokenizer(const std::string& model_dir, const std::string& tokenizer_option,
                                             int64_t model_vocab) {
  std::unique_ptr<Tokenizer> tokenizer;
  std::error_code error;
  const fs::path next_to_model = fs::path(model_dir) / "tokenizer.json";
  if (!tokenizer_option.empty()) {
    tokenizer = load_tokenizer(tokenizer_option);
  } else if (!model_dir.empty() && fs::exists(next_to_model, error)) {
    tokenizer = load_bpe_tokenizer(next_to_model.string());
  } else if (model_vocab == 256) {
    tokenizer = std::make_unique<ByteTokenizer>();
  } else {
    fail("model folder ", model_dir,
         " has no tokenizer.json (original state-spaces checkpoints ship none): pass --tokenizer PATH "
         "with a tokenizer.json (the Mamba language models use GPT-NeoX-20B's, from the Hugging Face repository "
         "EleutherAI/gpt-neox-20b), or --tokenizer bytes for a byte-level model");
  }
  MAMBA_CHECK(model_vocab <= 0 || tokenizer->size() <= model_vocab, "tokenizer ", tokenizer->source(), " has ",
              tokenizer->size(), " ids but the model in ", model_dir, " has a vocabulary of only ", model_vocab,
              ": they do not belong together");
  return tokenizer;
}

}  // namespace mamba::tokenizer

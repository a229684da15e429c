#include "tokenizer/tokenizer_json.h"

#include <fstream>

#include "core/error.h"

namespace mamba::tokenizer {

namespace {

using json = nlohmann::json;

// SAX events -> TokenizerJson. Containers being built are kept on a stack of pointers; only the
// innermost one grows, so the pointers to its ancestors stay valid.
class Reader final : public nlohmann::json_sax<json> {
 public:
  Reader(TokenizerJson& out, const std::string& path) : out_(out), path_(path) {}

  bool null() override { return value(json(nullptr)); }
  bool boolean(bool v) override { return value(json(v)); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::kVocab) return vocab_id(v);
    return value(json(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::kVocab) return vocab_id(v > uint64_t(INT64_MAX) ? -1 : int64_t(v));
    return value(json(v));
  }
  bool number_float(number_float_t v, const string_t&) override { return value(json(v)); }
  bool binary(binary_t& v) override { return value(json(v)); }

  bool string(string_t& v) override {
    if (mode_ == Mode::kMerges) {  // "a b"
      const size_t space = v.find(' ');
      MAMBA_CHECK(space != std::string::npos && v.find(' ', space + 1) == std::string::npos, where(), "model.merges[",
                  out_.merges.size(), "] = \"", v, "\" must be two tokens separated by one space");
      out_.merges.emplace_back(v.substr(0, space), v.substr(space + 1));
      return true;
    }
    if (mode_ == Mode::kMergePair) {
      pair_.push_back(std::move(v));
      return true;
    }
    return value(json(std::move(v)));
  }

  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }

  bool start_object(std::size_t) override {
    if (mode_ == Mode::kDom && stack_.size() == 2 && stack_.back() == model_ && key_ == "vocab") {
      mode_ = Mode::kVocab;
      out_.has_vocab = true;
      return true;
    }
    MAMBA_CHECK(mode_ == Mode::kDom, where(), bad_value_message());
    const bool is_model = stack_.size() == 1 && key_ == "model";
    json* object = open(json::object());
    if (is_model) model_ = object;
    return true;
  }
  bool end_object() override {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    stack_.pop_back();
    return true;
  }

  bool start_array(std::size_t) override {
    if (mode_ == Mode::kDom && stack_.size() == 2 && stack_.back() == model_ && key_ == "merges") {
      mode_ = Mode::kMerges;
      out_.has_merges = true;
      return true;
    }
    if (mode_ == Mode::kMerges) {  // ["a", "b"]
      mode_ = Mode::kMergePair;
      pair_.clear();
      return true;
    }
    MAMBA_CHECK(mode_ == Mode::kDom, where(), bad_value_message());
    open(json::array());
    return true;
  }
  bool end_array() override {
    if (mode_ == Mode::kMergePair) {
      MAMBA_CHECK(pair_.size() == 2, where(), "model.merges[", out_.merges.size(),
                  "] must be \"a b\" or [\"a\", \"b\"]");
      out_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      mode_ = Mode::kMerges;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kDom;
      return true;
    }
    stack_.pop_back();
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& error) override {
    fail(where(), "not valid JSON: ", error.what());
  }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };

  std::string where() const { return "tokenizer file " + path_ + ": "; }
  std::string bad_value_message() const {
    if (mode_ == Mode::kVocab) return "model.vocab[\"" + key_ + "\"] must be an integer id";
    return "model.merges[" + std::to_string(out_.merges.size()) + "] must be \"a b\" or [\"a\", \"b\"]";
  }

  bool vocab_id(int64_t id) {
    out_.vocab.emplace_back(std::move(key_), id);
    return true;
  }

  // Places a scalar in the innermost container (or as the root).
  bool value(json v) {
    MAMBA_CHECK(mode_ == Mode::kDom, where(), bad_value_message());
    place(std::move(v));
    return true;
  }
  json* place(json v) {
    if (stack_.empty()) {
      out_.root = std::move(v);
      return &out_.root;
    }
    json& container = *stack_.back();
    if (container.is_object()) {
      json& slot = container[key_];
      slot = std::move(v);
      return &slot;
    }
    container.push_back(std::move(v));
    return &container.back();
  }
  json* open(json container) {
    json* opened = place(std::move(container));
    stack_.push_back(opened);
    return opened;
  }

  TokenizerJson& out_;
  const std::string& path_;
  Mode mode_ = Mode::kDom;
  std::vector<json*> stack_;
  json* model_ = nullptr;
  std::string key_;
  std::vector<std::string> pair_;
};

}  // namespace

TokenizerJson read_tokenizer_json(const std::string& path) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  MAMBA_CHECK(file, "tokenizer file ", path, ": cannot open it");
  std::string text(size_t(file.tellg()), '\0');
  file.seekg(0);
  file.read(text.data(), std::streamsize(text.size()));
  MAMBA_CHECK(file, "tokenizer file ", path, ": read error");
  TokenizerJson out;
  Reader reader(out, path);
  json::sax_parse(text, &reader);
  return out;
}

}  // namespace mamba::tokenizer

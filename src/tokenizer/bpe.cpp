#include "tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "tokenizer/unicode.h"
#include "tokenizer/word_cache.h"

namespace mamba::tokenizer {

namespace {

using json = nlohmann::json;

// The byte-level alphabet (see bpe.h): byte -> code point, and back.
struct ByteAlphabet {
  static constexpr char32_t kEnd = 0x100 + 68;  // one past the largest code point used
  std::array<char32_t, 256> char_of_byte{};
  std::array<int16_t, kEnd> byte_of_char{};  // -1: not in the alphabet

  ByteAlphabet() {
    byte_of_char.fill(-1);
    char32_t next_extra = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      char_of_byte[b] = printable ? char32_t(b) : next_extra++;
      byte_of_char[char_of_byte[b]] = int16_t(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// The bytes of a token string whose characters are all in the alphabet, else nothing.
std::optional<std::string> alphabet_bytes(std::string_view token) {
  const ByteAlphabet& alphabet = byte_alphabet();
  const auto* bytes = reinterpret_cast<const unsigned char*>(token.data());
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const Utf8Step step = read_utf8(bytes + i, token.size() - i);
    if (step.kind != Utf8Step::kValid || step.code_point >= ByteAlphabet::kEnd ||
        alphabet.byte_of_char[step.code_point] < 0)
      return std::nullopt;
    out += char(alphabet.byte_of_char[step.code_point]);
    i += step.length;
  }
  return out;
}

// The bytes a token string stands for: mapped through the alphabet when every character is in
// it, else the string's own UTF-8 bytes (the ByteLevel decoder's rule).
std::string token_string_bytes(std::string_view token) { return alphabet_bytes(token).value_or(std::string(token)); }

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};
template <typename Value>
using StringMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

// Leftmost-longest search for a set of strings (the added tokens), over bytes.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() : nodes_(1) { first_bytes_.fill(false); }

  void add(std::string_view content, int32_t token_index) {
    if (content.empty()) return;
    first_bytes_[static_cast<unsigned char>(content[0])] = true;
    int32_t node = 0;
    for (unsigned char byte : content) {
      int32_t child = find_child(node, byte);
      if (child < 0) {
        child = int32_t(nodes_.size());
        nodes_[node].children.emplace_back(byte, child);
        nodes_.emplace_back();
      }
      node = child;
    }
    nodes_[node].token_index = token_index;
  }

  bool empty() const { return nodes_.size() == 1; }

  struct Match {
    size_t begin, end;
    int32_t token_index;
  };
  // The first match starting at or after `from`, the longest one at that position.
  std::optional<Match> find(std::string_view text, size_t from) const {
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    for (size_t begin = from; begin < text.size(); ++begin) {
      if (!first_bytes_[bytes[begin]]) continue;
      std::optional<Match> longest;
      int32_t node = 0;
      for (size_t i = begin; i < text.size(); ++i) {
        node = find_child(node, bytes[i]);
        if (node < 0) break;
        if (nodes_[node].token_index >= 0) longest = Match{begin, i + 1, nodes_[node].token_index};
      }
      if (longest) return longest;
    }
    return std::nullopt;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token_index = -1;
  };
  int32_t find_child(int32_t node, unsigned char byte) const {
    for (const auto& [child_byte, child] : nodes_[node].children)
      if (child_byte == byte) return child;
    return -1;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_bytes_;
};

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
};

struct MergeRule {
  int32_t rank;
  int32_t merged_id;
};

// (left id, right id) -> merge rule, open addressing with linear probing: the merge loop looks
// pairs up constantly, and a flat table costs one cache miss where a node-based map costs several.
class MergeTable {
 public:
  MergeTable() { reserve(0); }
  void reserve(size_t merges) {
    int log2 = 4;
    while ((size_t(1) << log2) < 2 * merges) ++log2;
    shift_ = 64 - log2;
    slots_.assign(size_t(1) << log2, Slot{kEmpty, {}});
  }
  // A later rule for the same pair replaces the earlier one, as in `tokenizers`.
  void insert(uint64_t key, MergeRule rule) {
    size_t index = home(key);
    while (slots_[index].key != kEmpty && slots_[index].key != key) index = (index + 1) & (slots_.size() - 1);
    slots_[index] = Slot{key, rule};
  }
  const MergeRule* find(uint64_t key) const {
    for (size_t index = home(key);; index = (index + 1) & (slots_.size() - 1)) {
      if (slots_[index].key == key) return &slots_[index].rule;
      if (slots_[index].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);  // ids are below 2^31, so no pair has this key
  struct Slot {
    uint64_t key;
    MergeRule rule;
  };
  size_t home(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<Slot> slots_;
  int shift_ = 60;
};

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

class BpeTokenizer : public Tokenizer {
 public:
  BpeTokenizer(const std::string& path, const TokenizerJson& file);

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override;
  int64_t size() const override { return int64_t(tokens_.size()); }
  bool is_special(int32_t id) const override { return token(id).special; }
  std::string_view token_bytes(int32_t id) const override { return token(id).bytes; }
  std::string token_text(int32_t id) const override { return token(id).text; }
  std::optional<int32_t> token_id(std::string_view token_text) const override {
    if (auto it = added_ids_.find(token_text); it != added_ids_.end()) return it->second;
    if (auto it = vocab_.find(token_text); it != vocab_.end()) return it->second;
    return std::nullopt;
  }
  const std::string& source() const override { return path_; }

 private:
  void load_model(const json& model, const TokenizerJson& file);
  void load_added_tokens(const json& added);
  void load_pipeline(const json& root);
  std::string where(const std::string& key) const { return "tokenizer file " + path_ + ": " + key; }

  // Splits `text` at added-token matches: matches become ids, the text between goes to `rest`.
  void split_added(const AddedTokenMatcher& matcher, std::string_view text, bool parse_special,
                   std::vector<int32_t>& ids, const std::function<void(std::string_view)>& rest) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;

  std::string path_;
  StringMap<int32_t> vocab_;  // token string (byte-level alphabet) -> id
  MergeTable merges_;
  std::array<int32_t, 256> byte_ids_;  // id of each single byte's token, -1 if none
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  StringMap<int32_t> whole_word_ids_;  // with ignore_merges: word bytes -> id

  struct TokenInfo {
    std::string text, bytes;
    bool special = false, present = false;
  };
  // Ids may have gaps, as in `tokenizers`; using one is an error.
  const TokenInfo& token(int32_t id) const {
    check_id(id);
    MAMBA_CHECK(tokens_[id].present, "token id ", id, " has no token in tokenizer ", path_);
    return tokens_[id];
  }
  TokenInfo& new_token(int32_t id) {
    if (size_t(id) >= tokens_.size()) tokens_.resize(size_t(id) + 1);
    tokens_[id].present = true;
    return tokens_[id];
  }
  std::vector<TokenInfo> tokens_;
  std::vector<AddedToken> added_;
  StringMap<int32_t> added_ids_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  NormalizationForm normalization_ = NormalizationForm::kNone;
  bool add_prefix_space_ = false;

  mutable std::mutex cache_mutex_;
  mutable WordCache cache_;
};

// The "type" of a pipeline step, "null" when there is none.
std::string json_type(const json& node) {
  return node.is_object() && node.contains("type") && node["type"].is_string() ? node["type"].get<std::string>()
                                                                               : std::string("null");
}

bool flag(const json& node, const char* key) {
  return node.contains(key) && node[key].is_boolean() && node[key].get<bool>();
}

BpeTokenizer::BpeTokenizer(const std::string& path, const TokenizerJson& file) : path_(path) {
  const json& root = file.root;
  MAMBA_CHECK(root.is_object() && root.contains("model") && root["model"].is_object(),
              where("expected a JSON object with a \"model\" object"));
  load_model(root["model"], file);
  load_pipeline(root);
  load_added_tokens(root.contains("added_tokens") ? root["added_tokens"] : json::array());

  for (TokenInfo& info : tokens_) info.bytes = token_string_bytes(info.text);
}

void BpeTokenizer::load_model(const json& model, const TokenizerJson& file) {
  const std::string type = json_type(model);
  // A model without "type" is a BPE model in `tokenizers` files.
  MAMBA_CHECK(type == "null" || type == "BPE", where("model type \""), type,
              "\" is not supported (only byte-level BPE)");
  MAMBA_CHECK(!model.contains("dropout") || model["dropout"].is_null() ||
                  (model["dropout"].is_number() && model["dropout"].get<double>() == 0.0),
              where("model.dropout (BPE dropout) is not supported"));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    MAMBA_CHECK(!model.contains(key) || model[key].is_null() || model[key] == "", where("model."), key,
                " is not supported (byte-level BPE has none)");
  MAMBA_CHECK(!flag(model, "byte_fallback"), where("model.byte_fallback is not supported"));
  fuse_unk_ = flag(model, "fuse_unk");
  ignore_merges_ = flag(model, "ignore_merges");

  MAMBA_CHECK(file.has_vocab, where("model.vocab must be an object"));
  vocab_.reserve(file.vocab.size());
  for (const auto& [text, id] : file.vocab) {
    MAMBA_CHECK(id >= 0 && id < INT32_MAX, where("model.vocab[\""), text, "\"] must be a non-negative id");
    vocab_[text] = int32_t(id);
    new_token(int32_t(id)).text = text;
  }

  const ByteAlphabet& alphabet = byte_alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string text;
    append_utf8(text, alphabet.char_of_byte[b]);
    auto it = vocab_.find(text);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = vocab_.find(model["unk_token"].get<std::string>());
    MAMBA_CHECK(it != vocab_.end(), where("model.unk_token is not in the vocabulary"));
    unk_id_ = it->second;
  }
  if (ignore_merges_)
    for (const auto& [text, id] : vocab_)
      if (std::optional<std::string> bytes = alphabet_bytes(text)) whole_word_ids_[*bytes] = id;

  MAMBA_CHECK(file.has_merges, where("model.merges must be an array"));
  merges_.reserve(file.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < file.merges.size(); ++rank) {
    const auto& [left, right] = file.merges[rank];
    joined.assign(left).append(right);
    auto left_it = vocab_.find(left), right_it = vocab_.find(right), merged_it = vocab_.find(joined);
    MAMBA_CHECK(left_it != vocab_.end() && right_it != vocab_.end() && merged_it != vocab_.end(),
                where("model.merges["), rank, "] (\"", left, "\", \"", right,
                "\") uses a token that is not in the vocabulary");
    merges_.insert(pair_key(left_it->second, right_it->second), MergeRule{int32_t(rank), merged_it->second});
  }
}

void BpeTokenizer::load_added_tokens(const json& added) {
  MAMBA_CHECK(added.is_array(), where("added_tokens must be an array"));
  for (size_t i = 0; i < added.size(); ++i) {
    const json& token = added[i];
    const std::string name = "added_tokens[" + std::to_string(i) + "]";
    MAMBA_CHECK(token.is_object() && token.contains("id") && token["id"].is_number_integer() &&
                    token["id"].get<int64_t>() >= 0 && token["id"].get<int64_t>() < INT32_MAX &&
                    token.contains("content") && token["content"].is_string() && !token["content"].empty(),
                where(name), " must have a non-negative integer \"id\" and a non-empty \"content\"");
    for (const char* feature : {"lstrip", "rstrip", "single_word"})
      MAMBA_CHECK(!flag(token, feature), where(name), " (\"", token["content"].get<std::string>(), "\") uses ", feature,
                  ", which is not supported");
    std::string normalized_content;
    AddedToken entry{token["content"].get<std::string>(), token["id"].get<int32_t>(), flag(token, "special")};
    // `normalized` defaults to the opposite of `special` in `tokenizers`.
    const bool normalized = token.contains("normalized") && token["normalized"].is_boolean()
                                ? token["normalized"].get<bool>()
                                : !entry.special;
    TokenInfo& info = new_token(entry.id);
    info.text = entry.content;
    info.special = entry.special;
    added_ids_[entry.content] = entry.id;
    added_.push_back(entry);
    // A normalized token is looked for in normalized text, so in its normalized form.
    if (normalized)
      normalized_matcher_.add(normalize(entry.content, normalization_, normalized_content), int32_t(added_.size() - 1));
    else
      raw_matcher_.add(entry.content, int32_t(added_.size() - 1));
  }
}

// The single step of `node`, or of a Sequence holding just one step; null stays null.
const json& single_step(const json& node, const std::string& what, const std::string& file) {
  if (json_type(node) != "Sequence") return node;
  const char* list_key = what == "normalizer" ? "normalizers" : what == "decoder" ? "decoders" : "pretokenizers";
  MAMBA_CHECK(node.contains(list_key) && node[list_key].is_array() && node[list_key].size() == 1, "tokenizer file ",
              file, ": ", what, " Sequence with other than one step is not supported");
  return node[list_key][0];
}

// root[key], or null when absent.
const json& member(const json& root, const char* key) {
  static const json null_node;
  auto it = root.find(key);
  return it == root.end() ? null_node : *it;
}

void BpeTokenizer::load_pipeline(const json& root) {
  const json& normalizer = single_step(member(root, "normalizer"), "normalizer", path_);
  if (!normalizer.is_null()) {
    const std::string type = json_type(normalizer);
    if (type == "NFC")
      normalization_ = NormalizationForm::kNFC;
    else if (type == "NFD")
      normalization_ = NormalizationForm::kNFD;
    else if (type == "NFKC")
      normalization_ = NormalizationForm::kNFKC;
    else if (type == "NFKD")
      normalization_ = NormalizationForm::kNFKD;
    else
      fail(where("normalizer \""), type, "\" is not supported (only NFC, NFD, NFKC, NFKD)");
  }

  const json& pre_tokenizer = single_step(member(root, "pre_tokenizer"), "pre_tokenizer", path_);
  MAMBA_CHECK(json_type(pre_tokenizer) == "ByteLevel", where("pre_tokenizer \""), json_type(pre_tokenizer),
              "\" is not supported (byte-level BPE needs ByteLevel)");
  MAMBA_CHECK(!pre_tokenizer.contains("use_regex") || flag(pre_tokenizer, "use_regex"),
              where("pre_tokenizer ByteLevel with use_regex false is not supported"));
  add_prefix_space_ = flag(pre_tokenizer, "add_prefix_space");

  const json& decoder = single_step(member(root, "decoder"), "decoder", path_);
  MAMBA_CHECK(json_type(decoder) == "ByteLevel", where("decoder \""), json_type(decoder),
              "\" is not supported (byte-level BPE needs ByteLevel)");
}

void BpeTokenizer::split_added(const AddedTokenMatcher& matcher, std::string_view text, bool parse_special,
                               std::vector<int32_t>& ids, const std::function<void(std::string_view)>& rest) const {
  size_t done = 0;
  for (size_t from = 0; !matcher.empty();) {
    const std::optional<AddedTokenMatcher::Match> match = matcher.find(text, from);
    if (!match) break;
    from = match->end;
    const AddedToken& token = added_[match->token_index];
    // Without parse_special a special token's match is dropped, and its text stays plain text.
    if (token.special && !parse_special) continue;
    if (match->begin > done) rest(text.substr(done, match->begin - done));
    ids.push_back(token.id);
    done = match->end;
  }
  if (done < text.size()) rest(text.substr(done));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
  const size_t invalid_at = find_invalid_utf8(text);
  MAMBA_CHECK(invalid_at == std::string_view::npos, "text to encode is not valid UTF-8 (at byte offset ", invalid_at,
              "); the BPE tokenizer ", path_, " takes UTF-8 text only");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  split_added(raw_matcher_, text, parse_special, ids, [&](std::string_view segment) {
    std::string storage;
    const std::string_view normalized = normalize(segment, normalization_, storage);
    split_added(normalized_matcher_, normalized, parse_special, ids,
                [&](std::string_view piece) { encode_piece(piece, ids); });
  });
  return ids;
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  thread_local std::vector<std::string_view> words;
  if (piece.empty()) return;
  std::string with_space;
  if (add_prefix_space_ && piece[0] != ' ') {
    with_space.reserve(piece.size() + 1);
    with_space.push_back(' ');
    with_space.append(piece);
    piece = with_space;
  }
  words.clear();
  split_gpt2(piece, words);
  for (std::string_view word : words) encode_word(word, ids);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.size() > WordCache::kMaxWordBytes) return merge_word(word, ids);
  const uint64_t hash = std::hash<std::string_view>{}(word);
  {
    std::lock_guard lock(cache_mutex_);
    if (cache_.lookup(word, hash, ids)) return;
  }
  const size_t first = ids.size();
  merge_word(word, ids);
  std::lock_guard lock(cache_mutex_);
  cache_.insert(word, hash, std::span(ids).subspan(first));
}

void BpeTokenizer::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (ignore_merges_)
    if (auto it = whole_word_ids_.find(word); it != whole_word_ids_.end()) {
      ids.push_back(it->second);
      return;
    }
  // Symbols form a linked list over positions; a merged-away symbol gets id -1.
  struct Symbol {
    int32_t id, prev, next;
  };
  struct Candidate {
    int32_t rank, position, merged_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  for (unsigned char byte : word) {
    int32_t id = byte_ids_[byte];
    if (id < 0) {
      if (unk_id_ < 0) continue;  // as in `tokenizers`: a byte without a token and no unk is dropped
      if (fuse_unk_ && !symbols.empty() && symbols.back().id == unk_id_) continue;
      id = unk_id_;
    }
    const int32_t position = int32_t(symbols.size());
    symbols.push_back({id, position - 1, position + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // A min-heap on (rank, position): the lowest-ranked pair, leftmost among equals, merges first.
  heap.clear();
  auto push_pair = [&](int32_t position) {
    const int32_t next = symbols[position].next;
    if (next < 0) return;
    const MergeRule* rule = merges_.find(pair_key(symbols[position].id, symbols[next].id));
    if (!rule) return;
    heap.push_back({rule->rank, position, rule->merged_id});
    std::push_heap(heap.begin(), heap.end(), std::greater<>{});
  };
  for (int32_t position = 0; position + 1 < int32_t(symbols.size()); ++position) push_pair(position);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.position];
    if (left.id < 0 || left.next < 0) continue;
    // Stale when either symbol changed since the candidate was queued.
    const MergeRule* rule = merges_.find(pair_key(left.id, symbols[left.next].id));
    if (!rule || rule->merged_id != top.merged_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.position;
    right.id = -1;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.position);
  }
  for (int32_t position = 0; position >= 0; position = symbols[position].next) ids.push_back(symbols[position].id);
}

}  // namespace

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& tokenizer_json_path) {
  const TokenizerJson file = read_tokenizer_json(tokenizer_json_path);
  try {
    return std::make_unique<BpeTokenizer>(tokenizer_json_path, file);
  } catch (const json::exception& e) {  // a field of an unexpected JSON type
    fail("tokenizer file ", tokenizer_json_path, ": unexpected content: ", e.what());
  }
}

}  // namespace mamba::tokenizer

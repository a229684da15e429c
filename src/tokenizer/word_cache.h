// A word -> token ids cache for the BPE merge loop, in flat arrays: an open-addressing table
// (linear probing) of 8-byte slots pointing into one pool where each entry holds the word's
// bytes followed by its ids, so a hit usually touches two cache lines. When the table is half
// full it is emptied and refilled. Not thread-safe: the caller locks.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace mamba::tokenizer {

class WordCache {
 public:
  // Words longer than this are not cached (they are rare and would crowd the pool).
  static constexpr size_t kMaxWordBytes = 255;

  explicit WordCache(int capacity_log2 = 17);
  // Appends the ids cached for `word` to `ids` and returns true; false when absent.
  bool lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& ids) const;
  void insert(std::string_view word, uint64_t hash, std::span<const int32_t> ids);

 private:
  struct Slot {
    uint32_t tag;     // high half of the hash
    uint32_t offset;  // entry position in pool_ plus one; 0 marks an empty slot
  };
  void clear();

  std::vector<Slot> slots_;
  uint64_t mask_;
  size_t entries_ = 0;
  // Entry: [word length, id count] as uint32_t, the word padded to 4 bytes, the ids.
  std::vector<uint32_t> pool_;
};

}  // namespace mamba::tokenizer

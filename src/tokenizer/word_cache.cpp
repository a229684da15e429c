#include "tokenizer/word_cache.h"

#include <cstring>

namespace mamba::tokenizer {

WordCache::WordCache(int capacity_log2)
    : slots_(size_t(1) << capacity_log2), mask_((uint64_t(1) << capacity_log2) - 1) {}

bool WordCache::lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& ids) const {
  const uint32_t tag = uint32_t(hash >> 32);
  for (uint64_t index = hash & mask_;; index = (index + 1) & mask_) {
    const Slot slot = slots_[index];
    if (slot.offset == 0) return false;
    if (slot.tag != tag) continue;
    const uint32_t* entry = pool_.data() + (slot.offset - 1);
    if (entry[0] != word.size() || std::memcmp(entry + 2, word.data(), word.size()) != 0) continue;
    const auto* cached = reinterpret_cast<const int32_t*>(entry + 2 + (word.size() + 3) / 4);
    ids.insert(ids.end(), cached, cached + entry[1]);
    return true;
  }
}

void WordCache::insert(std::string_view word, uint64_t hash, std::span<const int32_t> ids) {
  if (word.size() > kMaxWordBytes) return;
  if (2 * (entries_ + 1) > slots_.size() || pool_.size() > (size_t(1) << 24)) clear();
  const size_t offset = pool_.size();
  const size_t word_words = (word.size() + 3) / 4;
  pool_.resize(offset + 2 + word_words + ids.size());
  uint32_t* entry = pool_.data() + offset;
  entry[0] = uint32_t(word.size());
  entry[1] = uint32_t(ids.size());
  std::memcpy(entry + 2, word.data(), word.size());
  std::memcpy(entry + 2 + word_words, ids.data(), ids.size() * sizeof(int32_t));
  uint64_t index = hash & mask_;
  while (slots_[index].offset != 0) index = (index + 1) & mask_;
  slots_[index] = Slot{uint32_t(hash >> 32), uint32_t(offset + 1)};
  ++entries_;
}

void WordCache::clear() {
  std::fill(slots_.begin(), slots_.end(), Slot{0, 0});
  pool_.clear();
  entries_ = 0;
}

}  // namespace mamba::tokenizer

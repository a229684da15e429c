#include "core/memory_probe.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/threads.h"
#include "core/timer.h"

namespace mamba {

namespace {

// OR of the 8-byte words of [p, p + n) (a partial word at the end is copied first): an integer
// reduction the compiler vectorises, so the pass runs at memory speed.
uint64_t or_of_words(const std::byte* p, size_t n) {
  uint64_t acc = 0;
  const size_t words = n / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, p + 8 * i, 8);
    acc |= w;
  }
  uint64_t tail = 0;
  if (n > 8 * words) std::memcpy(&tail, p + 8 * words, n - 8 * words);  // empty buffers may have no address
  return acc | tail;
}

}  // namespace

double seconds_to_read(const std::vector<std::span<const std::byte>>& buffers, int passes) {
  MAMBA_CHECK(passes >= 1, "seconds_to_read: expected at least one pass, got ", passes);
  // Buffers laid end to end, cut into 256 KiB chunks that threads take as they become free (the
  // way the decode mat-vec hands out its work).
  std::vector<int64_t> starts{0};
  for (const auto& b : buffers) starts.push_back(starts.back() + int64_t(b.size()));
  constexpr int64_t kChunk = int64_t(1) << 18;
  std::atomic<uint64_t> sink = 0;
  double best = 0;
  for (int pass = 0; pass < passes; ++pass) {
    Timer timer;
    parallel_for_chunks(starts.back(), kChunk, [&](int64_t begin, int64_t end, int) {
      uint64_t acc = 0;
      size_t i = size_t(std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin()) - 1;
      for (int64_t at = begin; at < end; ++i) {
        const int64_t stop = std::min(end, starts[i + 1]);
        acc |= or_of_words(buffers[i].data() + (at - starts[i]), size_t(stop - at));
        at = stop;
      }
      sink.fetch_or(acc, std::memory_order_relaxed);  // keeps the reads from being optimised away
    });
    const double seconds = timer.seconds();
    best = pass == 0 ? seconds : std::min(best, seconds);
  }
  return best;
}

}  // namespace mamba

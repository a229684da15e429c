// One process-wide pool of worker threads, sized by --threads.
//
// parallel_for splits [0, n) into at most num_threads() contiguous ranges of near-equal size,
// the same ranges for the same n and thread count, so any reduction done per range and then
// combined in range order is deterministic at a fixed thread count. Workers spin briefly before
// sleeping: decode issues a few dozen small parallel ops per token and cannot afford a futex
// wake-up for each.
#pragma once
#include <cstdint>
#include <functional>

namespace mamba {

void set_num_threads(int n);  // n >= 1; 0 means all cores
int num_threads();
int hardware_threads();

// Calls fn(begin, end, range_index) for each range; blocks until all are done. A range is
// never empty. Nested calls from inside a worker run serially in the caller.
using RangeFn = std::function<void(int64_t begin, int64_t end, int range_index)>;
void parallel_for(int64_t n, const RangeFn& fn);
// As above with at most `max_ranges` ranges (e.g. to keep per-range work above a minimum).
void parallel_for(int64_t n, int max_ranges, const RangeFn& fn);

// Calls fn(begin, end, chunk_index) on [0, n) cut into pieces of `chunk` (the last may be
// shorter), handed to whichever thread is free next. For work without cross-range reductions
// whose threads run at unequal speeds (cores shared with other machines, memory contention):
// a static split would leave the faster threads waiting for the slowest one.
void parallel_for_chunks(int64_t n, int64_t chunk, const RangeFn& fn);

// The range parallel_for would give to range_index of `ranges` ranges over [0, n).
void split_range(int64_t n, int ranges, int range_index, int64_t* begin, int64_t* end);

}  // namespace mamba

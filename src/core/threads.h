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

struct TeamState;  // what the threads of one team run share (threads.cpp)

// One thread's part in a team run (run_team): every thread of the pool runs the same function at
// the same time, so steps that depend on each other meet at barriers inside one run. A decode
// layer is four such steps; as four pool runs, each cost its set-up on the calling thread and a
// wait at its end (docs/perf/cpu_model.md, v14).
class Team {
 public:
  Team(TeamState* state, int rank, int size) : state_(state), rank_(rank), size_(size) {}
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Returns once every thread of the team has called barrier() as often as this one.
  void barrier();
  // fn(begin, end, chunk_index) on [0, n) cut into pieces of `chunk`, each run by whichever thread
  // of the team is free next (as parallel_for_chunks). Every thread makes the same calls in the
  // same order; a call does not wait for the other threads at its end (barrier() does).
  void for_chunks(int64_t n, int64_t chunk, const RangeFn& fn);
  // fn(begin, end, rank) on this thread's range of [0, n), the range parallel_for gives its
  // range_index = rank (nothing when n has fewer elements than the team has threads before it).
  void for_ranges(int64_t n, const RangeFn& fn);

 private:
  TeamState* state_;
  int rank_, size_;
  int chunked_calls_ = 0;  // for_chunks calls so far: each has a chunk counter of its own
};

// Runs fn on every thread of the pool at once (on the calling thread alone inside a worker) and
// returns when all are done. fn must not throw: a thread that left early would never reach the
// barriers the others wait at, so inputs are checked before the run.
void run_team(const std::function<void(Team&)>& fn);

}  // namespace mamba

#include "core/threads.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"

namespace mamba {

namespace {

thread_local bool inside_worker = false;

class ThreadPool {
 public:
  // Spinning only pays while every thread has a core of its own; with more threads than cores
  // it would burn the time slice of the thread being waited for.
  explicit ThreadPool(int n) : size_(n), spins_before_yield_(n <= hardware_threads() ? 20000 : 0) {
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ~ThreadPool() {
    stop_.store(true);
    generation_.fetch_add(1);
    generation_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return size_; }

  void run(int ranges, const std::function<void(int)>& task) {
    // The new claim goes first: from here on no worker still in an earlier run can claim a range.
    const uint64_t generation = generation_.load() + 1;
    claim_.store(claim_tag(generation) | 1);
    task_ = &task;
    ranges_.store(ranges);
    pending_.store(ranges - 1);
    error_ = nullptr;
    generation_.store(generation, std::memory_order_release);
    generation_.notify_all();
    run_range(0);
    if (const int ran = claim_ranges(generation)) pending_.fetch_sub(ran, std::memory_order_release);
    wait_for_ranges();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_range(int r) {
    try {
      (*task_)(r);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
  // Spins before yielding: the last ranges usually finish within microseconds, and a yield is a
  // system call (costly in a VM) that only helps when threads outnumber cores.
  void wait_for_ranges() {
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < spins_before_yield_)
        pause();
      else
        std::this_thread::yield();
    }
  }
  static void pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  // A claim is (run generation << 32 | next range index), taken by compare-and-swap, so a worker
  // still finishing an earlier run can never take (or miscount) a range of the current one.
  // Returns how many ranges this thread ran: the caller takes them off pending_ once, since every
  // write to a line the other threads use costs a transfer between cores (~1% of a decode step
  // when pending_ was decremented per range, docs/perf/cpu_model.md v11).
  static uint64_t claim_tag(uint64_t generation) { return generation << 32; }
  int claim_ranges(uint64_t generation) {
    const int ranges = ranges_.load();
    int ran = 0;
    uint64_t claim = claim_.load();
    while ((claim & ~0xffffffffull) == claim_tag(generation) && int(claim & 0xffffffffu) < ranges) {
      if (!claim_.compare_exchange_weak(claim, claim + 1)) continue;
      run_range(int(claim & 0xffffffffu));
      ++ran;
      // Most often no other thread has claimed since: try the next index without reading first.
      ++claim;
    }
    return ran;
  }
  void work(int) {
    inside_worker = true;
    uint64_t seen = 0;
    while (true) {
      uint64_t g = generation_.load(std::memory_order_acquire);
      for (int spin = 0; g == seen && spin < spins_before_yield_; ++spin) {
        pause();
        g = generation_.load(std::memory_order_acquire);
      }
      if (g == seen) {
        generation_.wait(seen);
        continue;
      }
      seen = g;
      if (stop_.load()) return;
      if (const int ran = claim_ranges(g)) pending_.fetch_sub(ran, std::memory_order_release);
    }
  }

  int size_;
  int spins_before_yield_;
  std::vector<std::thread> workers_;
  // Written during a run by several threads: each on a cache line of its own.
  alignas(64) std::atomic<uint64_t> claim_{0};
  alignas(64) std::atomic<int> pending_{0};
  alignas(64) std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> ranges_{0};
  const std::function<void(int)>* task_ = nullptr;
  std::exception_ptr error_;
  std::mutex error_mutex_;
};

std::mutex pool_mutex;
std::unique_ptr<ThreadPool> pool;
int requested_threads = 0;

ThreadPool& get_pool() {
  std::lock_guard<std::mutex> lock(pool_mutex);
  if (!pool) pool = std::make_unique<ThreadPool>(requested_threads > 0 ? requested_threads : hardware_threads());
  return *pool;
}

}  // namespace

int hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

void set_num_threads(int n) {
  MAMBA_CHECK(n >= 0, "--threads: expected a positive number, got ", n);
  std::lock_guard<std::mutex> lock(pool_mutex);
  int wanted = n > 0 ? n : hardware_threads();
  requested_threads = wanted;
  if (pool && pool->size() == wanted) return;
  pool.reset();
}

int num_threads() { return get_pool().size(); }

void split_range(int64_t n, int ranges, int range_index, int64_t* begin, int64_t* end) {
  int64_t base = n / ranges, extra = n % ranges;
  *begin = range_index * base + std::min<int64_t>(range_index, extra);
  *end = *begin + base + (range_index < extra ? 1 : 0);
}

void parallel_for(int64_t n, int max_ranges, const RangeFn& fn) {
  if (n <= 0) return;
  ThreadPool& p = get_pool();
  int ranges = int(std::min<int64_t>({n, int64_t(p.size()), int64_t(std::max(1, max_ranges))}));
  if (ranges == 1 || inside_worker) {
    // Serial, but with the same ranges so per-range reductions give identical results.
    for (int r = 0; r < ranges; ++r) {
      int64_t b, e;
      split_range(n, ranges, r, &b, &e);
      fn(b, e, r);
    }
    return;
  }
  std::function<void(int)> task = [&](int r) {
    int64_t b, e;
    split_range(n, ranges, r, &b, &e);
    fn(b, e, r);
  };
  p.run(ranges, task);
}

void parallel_for_chunks(int64_t n, int64_t chunk, const RangeFn& fn) {
  if (n <= 0) return;
  MAMBA_CHECK(chunk >= 1, "parallel_for_chunks: chunk must be positive, got ", chunk);
  const int64_t chunks = (n + chunk - 1) / chunk;
  MAMBA_CHECK(chunks <= INT32_MAX, "parallel_for_chunks: ", chunks, " chunks is more than a pool run can hold");
  auto run_chunk = [&](int r) { fn(r * chunk, std::min(n, (r + 1) * chunk), r); };
  ThreadPool& p = get_pool();
  if (chunks == 1 || p.size() == 1 || inside_worker) {
    for (int r = 0; r < int(chunks); ++r) run_chunk(r);
    return;
  }
  p.run(int(chunks), run_chunk);
}

void parallel_for(int64_t n, const RangeFn& fn) { parallel_for(n, 1 << 30, fn); }

}  // namespace mamba

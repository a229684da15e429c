#include "core/device.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#ifdef MAMBACPP_CUDA
#include <cuda_runtime_api.h>
#endif

namespace mamba {

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

Device device_from_name(const std::string& name, const std::string& what) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  fail(what, ": unknown device '", name, "' (expected cpu or cuda)");
}

bool cuda_compiled() {
#ifdef MAMBACPP_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef MAMBACPP_CUDA
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return false;
#endif
}

#ifdef MAMBACPP_CUDA
static void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("CUDA ", what, " failed: ", cudaGetErrorString(status));
}
#endif

[[maybe_unused]] static void require_cuda() {
  MAMBA_CHECK(cuda_compiled(),
              "--device cuda: this build of mambacpp has no CUDA support (nvcc was not found when it was built)");
}

#ifdef MAMBACPP_CUDA
namespace {
// GPU blocks are cached instead of returned: cudaFree waits for the whole device and cudaMalloc is
// slow, and a model step allocates and frees the same sizes over and over. Sizes are rounded to a
// granule so that equal-shaped tensors reuse each other's blocks. Every kernel runs on the default
// stream, so a block freed here while a queued kernel still reads it can only be handed to work
// queued after that kernel.
class CudaBlockCache {
 public:
  void* allocate(size_t bytes) {
    size_t size = rounded(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // A recording first reuses the blocks it freed itself: its replays run in the recorded order.
      for (std::multimap<size_t, void*>* pool : {&recording_free_, &free_}) {
        auto it = pool->find(size);
        if (it == pool->end()) continue;
        void* p = it->second;
        pool->erase(it);
        in_use(p, size);
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t status = cudaMalloc(&p, size);
    if (status != cudaSuccess) {  // give the cached blocks back to the driver and try once more
      (void)cudaGetLastError();
      release_cached();
      status = cudaMalloc(&p, size);
    }
    MAMBA_CHECK(status == cudaSuccess, "out of GPU memory: could not allocate ", bytes, " bytes (",
                cudaGetErrorString(status), ")");
    std::lock_guard<std::mutex> lock(mutex_);
    in_use(p, size);
    return p;
  }

  void release(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    const size_t size = it->second;
    sizes_.erase(it);
    if (held_.count(p)) {
      held_free_[p] = size;
    } else if (recording_) {
      recorded_[p] = size;
      recording_free_.emplace(size, p);
    } else {
      free_.emplace(size, p);
    }
  }

  // Between these two calls the blocks allocated or freed belong to a recording: after it, they are
  // held for it (never handed to other work) until give_back.
  void begin_reserving() {
    std::lock_guard<std::mutex> lock(mutex_);
    recording_ = true;
  }
  std::vector<std::pair<void*, size_t>> end_reserving() {
    std::lock_guard<std::mutex> lock(mutex_);
    recording_ = false;
    std::vector<std::pair<void*, size_t>> blocks(recorded_.begin(), recorded_.end());
    for (const auto& [p, size] : recorded_) held_.insert(p);
    for (const auto& [size, p] : recording_free_) held_free_[p] = size;
    recorded_.clear();
    recording_free_.clear();
    return blocks;
  }
  void give_back(const std::vector<std::pair<void*, size_t>>& blocks) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [p, size] : blocks) {
      held_.erase(p);
      if (held_free_.erase(p)) free_.emplace(size, p);
    }
  }

  void release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    cudaDeviceSynchronize();
    for (auto& [size, p] : free_) cudaFree(p);
    free_.clear();
  }

 private:
  static size_t rounded(size_t bytes) {
    const size_t granule = bytes < (size_t(1) << 20) ? 512 : (size_t(2) << 20);
    return (bytes + granule - 1) / granule * granule;
  }
  void in_use(void* p, size_t size) {
    sizes_[p] = size;
    if (recording_) recorded_[p] = size;
  }
  std::mutex mutex_;
  std::unordered_map<void*, size_t> sizes_;  // blocks in use
  std::multimap<size_t, void*> free_;        // cached blocks by size
  bool recording_ = false;
  std::unordered_map<void*, size_t> recorded_;   // blocks the recording in progress used
  std::multimap<size_t, void*> recording_free_;  // of those, the ones it freed
  std::unordered_set<void*> held_;               // blocks of finished recordings still alive
  std::unordered_map<void*, size_t> held_free_;  // and the ones of them freed since
};

// Never destroyed: tensors in static storage may be freed after main returns.
CudaBlockCache& block_cache() {
  static CudaBlockCache* cache = new CudaBlockCache;
  return *cache;
}

// Small host-to-GPU copies (a batch's token ids and targets) are queued behind the GPU's work
// instead of waiting for it: the bytes go first into a pinned buffer, which the GPU copies from
// when it gets there. A buffer is reused once the copy that last read it is done.
class UploadStaging {
 public:
  static constexpr size_t kMaxBytes = size_t(4) << 20;

  void upload(void* dst, const void* src, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& slot = free_slot(bytes);
    std::memcpy(slot.host, src, bytes);
    cuda_check(cudaMemcpyAsync(dst, slot.host, bytes, cudaMemcpyHostToDevice, cudaStreamPerThread),
               "cudaMemcpyAsync (upload)");
    cuda_check(cudaEventRecord(slot.copied, cudaStreamPerThread), "cudaEventRecord (upload)");
  }

 private:
  struct Slot {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t copied = nullptr;
  };
  // A host that runs far ahead of the GPU waits for its oldest copy rather than pinning more.
  static constexpr size_t kMaxSlots = 64;

  Slot& free_slot(size_t bytes) {
    for (Slot& slot : slots_) {
      if (slot.bytes < bytes) continue;
      const cudaError_t status = cudaEventQuery(slot.copied);
      if (status == cudaSuccess) return slot;
      if (status == cudaErrorNotReady) (void)cudaGetLastError();  // not an error to keep
    }
    if (slots_.size() >= kMaxSlots) {
      for (Slot& slot : slots_)
        if (slot.bytes >= bytes) {
          cuda_check(cudaEventSynchronize(slot.copied), "cudaEventSynchronize (upload)");
          return slot;
        }
    }
    Slot slot;
    slot.bytes = std::max(bytes, size_t(64) << 10);
    cuda_check(cudaHostAlloc(&slot.host, slot.bytes, cudaHostAllocDefault), "cudaHostAlloc (upload staging)");
    cuda_check(cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming), "cudaEventCreate (upload)");
    slots_.push_back(slot);
    return slots_.back();
  }

  std::mutex mutex_;
  std::deque<Slot> slots_;  // stable addresses: free_slot hands out references
};

UploadStaging& upload_staging() {
  static UploadStaging* staging = new UploadStaging;
  return *staging;
}
}  // namespace
#endif

namespace {
// A training step allocates and frees the same activation buffers every step. glibc gives blocks
// above its mmap threshold back to the kernel when they are freed, so every step faulted them in
// anew: the tiny model's CPU training spent 40% of its time in page faults (748k minor faults in 60
// steps; 65k with this, and 1.8x the steps per second). Blocks up to 64 MiB stay in the heap, and
// the heap is not trimmed below 256 MiB of free space.
void keep_freed_memory_mapped() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
  });
#endif
}
}  // namespace

#if defined(__SANITIZE_ADDRESS__)  // GCC
#define MAMBACPP_ADDRESS_SANITIZER 1
#elif defined(__has_feature)  // Clang
#if __has_feature(address_sanitizer)
#define MAMBACPP_ADDRESS_SANITIZER 1
#endif
#endif
#ifndef MAMBACPP_ADDRESS_SANITIZER
#define MAMBACPP_ADDRESS_SANITIZER 0
#endif

namespace {
// A decode step allocates and frees a few hundred small tensors; glibc's aligned allocation splits
// a chunk for each and merges the pieces back when it is freed, ≈0.2 ms of a 5.4 ms step of the
// 130m bf16 CPU decode (docs/perf/cpu_model.md, v11). Freed blocks of up to 1 MiB are kept here by
// size and handed out again, up to 64 MiB in all. AddressSanitizer builds free every block, so
// that a use after free is still caught.
class HostBlockCache {
 public:
  static constexpr size_t kMaxBlock = size_t(1) << 20, kMaxHeld = size_t(64) << 20;

  // A kept block of exactly `bytes`, or null.
  void* take(size_t bytes) {
    if (bytes > kMaxBlock) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    held_ -= bytes;
    return p;
  }
  // Whether the block was kept (else the caller frees it).
  bool keep(void* p, size_t bytes) {
#if MAMBACPP_ADDRESS_SANITIZER
    (void)p;
    (void)bytes;
    return false;
#else
    if (bytes > kMaxBlock) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    if (held_ + bytes > kMaxHeld) return false;
    free_[bytes].push_back(p);
    held_ += bytes;
    return true;
#endif
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t held_ = 0;
};

// Never destroyed: tensors in static storage may be freed after main returns.
HostBlockCache& host_blocks() {
  static HostBlockCache* cache = new HostBlockCache;
  return *cache;
}

size_t host_block_bytes(size_t bytes) { return (std::max<size_t>(bytes, 1) + 63) / 64 * 64; }
}  // namespace

bool host_blocks_reused() { return !MAMBACPP_ADDRESS_SANITIZER; }

void* device_alloc(Device d, size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (d == Device::cpu) {
    const size_t block = host_block_bytes(bytes);
    if (void* p = host_blocks().take(block)) return p;
    keep_freed_memory_mapped();
    void* p = std::aligned_alloc(64, block);
    MAMBA_CHECK(p != nullptr, "out of memory: could not allocate ", bytes, " bytes on the CPU");
    return p;
  }
  require_cuda();
#ifdef MAMBACPP_CUDA
  return block_cache().allocate(bytes);
#else
  return nullptr;
#endif
}

void page_out_host_memory(const void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_PAGEOUT)
  const auto page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (uintptr_t(p) + page - 1) / page * page, end = (uintptr_t(p) + bytes) / page * page;
  if (first < end) madvise(reinterpret_cast<void*>(first), end - first, MADV_PAGEOUT);
#else
  (void)p;
  (void)bytes;
#endif
}

void device_free(Device d, void* p, size_t bytes) {
  if (d == Device::cpu) {
    if (!host_blocks().keep(p, host_block_bytes(bytes))) std::free(p);
    return;
  }
#ifdef MAMBACPP_CUDA
  block_cache().release(p);
#endif
}

void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::cpu && src_device == Device::cpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  require_cuda();
#ifdef MAMBACPP_CUDA
  if (src_device == Device::cpu && bytes <= UploadStaging::kMaxBytes && !RecordedWork::recording_now()) {
    upload_staging().upload(dst, src, bytes);
    return;
  }
  if (src_device == Device::cuda && dst_device == Device::cuda) {
    cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread), "cudaMemcpyAsync");
    return;
  }
  cuda_check(cudaMemcpy(dst, src, bytes, src_device == Device::cpu ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost),
             "cudaMemcpy");
#endif
}

void device_memset_zero(void* p, Device d, size_t bytes) {
  if (d == Device::cpu) {
    std::memset(p, 0, bytes);
    return;
  }
  require_cuda();
#ifdef MAMBACPP_CUDA
  cuda_check(cudaMemsetAsync(p, 0, bytes, cudaStreamPerThread), "cudaMemsetAsync");
#endif
}

bool RecordedWork::supported(Device device) { return device == Device::cuda && cuda_compiled(); }

bool RecordedWork::recording_now() {
#ifdef MAMBACPP_CUDA
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(cudaStreamPerThread, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
#else
  return false;
#endif
}

#ifdef MAMBACPP_CUDA
RecordedWork::RecordedWork(const std::function<void()>& work) {
  CudaBlockCache& cache = block_cache();
  cache.begin_reserving();
  cudaStream_t stream = cudaStreamPerThread;
  cudaError_t status = cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed);
  if (status != cudaSuccess) {
    cache.give_back(cache.end_reserving());
    cuda_check(status, "cudaStreamBeginCapture");
  }
  try {
    work();
  } catch (...) {
    cudaGraph_t unfinished = nullptr;
    cudaStreamEndCapture(stream, &unfinished);
    if (unfinished) cudaGraphDestroy(unfinished);
    (void)cudaGetLastError();
    cache.give_back(cache.end_reserving());
    throw;
  }
  cudaGraph_t graph = nullptr;
  status = cudaStreamEndCapture(stream, &graph);
  reserved_ = cache.end_reserving();
  if (status == cudaSuccess) {
    cudaGraphExec_t exec = nullptr;
    status = cudaGraphInstantiate(&exec, graph, 0);
    executable_ = exec;
  }
  if (graph) cudaGraphDestroy(graph);
  if (status != cudaSuccess) {
    cache.give_back(reserved_);
    fail("recording GPU work as a CUDA graph failed: ", cudaGetErrorString(status),
         " (the recorded code waited for the GPU or copied to the host)");
  }
}

RecordedWork::~RecordedWork() {
  if (executable_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(executable_));
  block_cache().give_back(reserved_);
}

void RecordedWork::replay() {
  cuda_check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(executable_), cudaStreamPerThread), "cudaGraphLaunch");
}
#else
RecordedWork::RecordedWork(const std::function<void()>&) { require_cuda(); }
RecordedWork::~RecordedWork() = default;
void RecordedWork::replay() {}
#endif

}  // namespace mamba

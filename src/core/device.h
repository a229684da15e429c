// Where a tensor's memory lives. CUDA support is compiled in when nvcc is found at build
// time (MAMBACPP_CUDA); without it, asking for a CUDA tensor is a clear error.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mamba {

enum class Device : unsigned char { cpu, cuda };

const char* device_name(Device d);
Device device_from_name(const std::string& name, const std::string& what);  // "cpu" | "cuda"

bool cuda_compiled();   // built with CUDA
bool cuda_available();  // built with CUDA and a GPU is present

// Raw allocation on a device; CPU memory is 64-byte aligned. device_free takes the size that was
// allocated: freed blocks are kept for reuse by size (small CPU blocks; every GPU block).
void* device_alloc(Device d, size_t bytes);
void device_free(Device d, void* p, size_t bytes);
// Whether freed CPU blocks are kept for reuse (not in AddressSanitizer builds, which free every
// block so that a use after free is still caught).
bool host_blocks_reused();
// Copies bytes between any two devices. The host's memory may be reused when it returns; copies to
// the host wait for the GPU, copies on the GPU and small copies from the host (up to 4 MiB) are
// queued behind the GPU's work without waiting, larger ones from the host wait.
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void device_memset_zero(void* p, Device d, size_t bytes);
// Lets the kernel take back the whole pages inside [p, p + bytes) of host memory (MADV_PAGEOUT),
// keeping their contents: pages of a memory-mapped file are read again if touched, anonymous
// pages stay (or are swapped). Used once weights have been copied out of a mapped checkpoint, so
// the process does not hold both copies; a no-op where the kernel lacks the advice.
void page_out_host_memory(const void* p, size_t bytes);

// GPU work recorded once and replayed with one launch (a CUDA graph): the host cost of queuing
// many small kernels is paid once. While the constructor runs `work`, what the calling thread
// queues on the GPU is recorded, not run; `work` must not wait for the GPU or copy to the host.
// GPU blocks that `work` allocated or freed while it was recorded are held for the recording until
// it is destroyed (a block freed inside `work` is reused by its later allocations, as replays run in
// the recorded order), so a replay never writes into memory handed to other work; the tensors
// `work` leaves alive are its outputs, rewritten by each replay.
class RecordedWork {
 public:
  // Whether work queued for `device` can be recorded (CUDA builds, GPU work).
  static bool supported(Device device);
  // Whether the calling thread's GPU work is being recorded now: copies must then not be queued
  // from a staging buffer that later copies overwrite, and nothing may wait for the GPU.
  static bool recording_now();
  explicit RecordedWork(const std::function<void()>& work);
  ~RecordedWork();
  RecordedWork(const RecordedWork&) = delete;
  RecordedWork& operator=(const RecordedWork&) = delete;
  void replay();

 private:
  void* executable_ = nullptr;                      // cudaGraphExec_t
  std::vector<std::pair<void*, size_t>> reserved_;  // GPU blocks the recording used, held for it
};

}  // namespace mamba

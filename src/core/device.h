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

// Raw allocation on a device; CPU memory is 64-byte aligned.
void* device_alloc(Device d, size_t bytes);
void device_free(Device d, void* p);
// Copies bytes between any two devices. The host's memory may be reused when it returns; copies to
// the host wait for the GPU, small copies from the host (up to 4 MiB) are queued behind the GPU's
// work without waiting, larger ones wait.
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void device_memset_zero(void* p, Device d, size_t bytes);

// GPU work recorded once and replayed with one launch (a CUDA graph): the host cost of queuing
// many small kernels is paid once. While the constructor runs `work`, what the calling thread
// queues on the GPU is recorded, not run; `work` must not wait for the GPU or copy to the host.
// GPU blocks freed during the recording stay reserved until the recording is destroyed, so a
// replay never writes into memory handed out since; the tensors `work` leaves alive are its outputs.
class RecordedWork {
 public:
  // Whether work queued for `device` can be recorded (CUDA builds, GPU work).
  static bool supported(Device device);
  explicit RecordedWork(const std::function<void()>& work);
  ~RecordedWork();
  RecordedWork(const RecordedWork&) = delete;
  RecordedWork& operator=(const RecordedWork&) = delete;
  void replay();

 private:
  void* executable_ = nullptr;                      // cudaGraphExec_t
  std::vector<std::pair<void*, size_t>> reserved_;  // GPU blocks the recording's temporaries used
};

}  // namespace mamba

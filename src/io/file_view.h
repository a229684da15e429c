// What the checkpoint readers share: a file's text, or its bytes memory-mapped (private, copy-on-write, so a
// caller may write into tensor views without touching the file), bounds-checked little-endian
// reads from untrusted bytes, and overflow-checked element counts.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace mamba::io {

// The whole of a file, mapped. Unmapped when the last owner goes away.
struct MappedFile {
  void* data = nullptr;
  size_t size = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
};

// Maps `path`; `what` says what kind of file is expected, for the error messages.
std::shared_ptr<MappedFile> map_file(const std::string& path, const std::string& what);

// The whole of a (small, text) file; errors name `path`.
std::string read_text_file(const std::string& path);

// Reads an unsigned little-endian integer of sizeof(T) bytes at `p`; the caller has checked bounds.
template <typename T>
T load_le(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= T(p[i]) << (8 * i);
  return v;
}

// Elements of `shape`, failing with `what` when a dimension is negative or the count (times
// `element_size` bytes) overflows.
int64_t checked_numel(const Shape& shape, size_t element_size, const std::string& what);

// A tensor of `shape` over `bytes`: a view when the address suits the dtype's alignment,
// otherwise an aligned copy (some writers do not align their data).
Tensor view_or_aligned_copy(const uint8_t* bytes, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive);

}  // namespace mamba::io

// The safetensors format: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data.
// The reader validates everything a file can lie about (header length past the end, offsets
// outside the data or overlapping, a byte count that disagrees with dtype × shape, unknown dtypes,
// duplicate names) and names the file and tensor in its error. Supported dtypes: F64, F32, BF16,
// F16, I64, I32, U16. The writer pads the header to 8 bytes and lays tensors out widest element
// first, so every tensor is aligned to its element size.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mamba::io {

struct SafetensorsFile {
  // Views into the mapping (kept alive by each tensor; copied only when misaligned). The mapping is
  // private: writing into a tensor never changes the file.
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Memory-maps `path` and returns views of its tensors.
SafetensorsFile read_safetensors(const std::string& path);
// Parses an in-memory buffer (used by the fuzzer); `keep_alive` owns `data`.
SafetensorsFile parse_safetensors(const void* data, size_t size, std::shared_ptr<void> keep_alive,
                                  const std::string& source);

// Writes tensors (CPU or GPU, any dtype) to `path` atomically: `path.tmp`, fsync, rename.
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes `bytes` to `path` atomically (temp file in the same folder, fsync, rename, fsync folder).
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace mamba::io

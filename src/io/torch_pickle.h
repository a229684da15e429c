// Reader for PyTorch's `torch.save` files (pytorch_model.bin): a zip archive holding
// `archive/data.pkl` (a pickled state dict whose tensors refer to storages by key) and
// `archive/data/<key>` (raw little-endian storages). Only the pickle opcodes and globals that a
// state dict of plain tensors uses are accepted; anything else is an error naming it. Tensors
// that share a storage (tied weights) share memory here too.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace mamba::io {

struct TorchStateDict {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> storage_of;  // tensor name -> storage key (equal keys: tied)
};

TorchStateDict read_torch_state_dict(const std::string& path);
// Parses an in-memory zip (used by the fuzzer).
TorchStateDict parse_torch_state_dict(const void* data, size_t size, std::shared_ptr<void> keep_alive,
                                      const std::string& source);

}  // namespace mamba::io

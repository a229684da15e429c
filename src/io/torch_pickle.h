// Reader for PyTorch's `torch.save` files (pytorch_model.bin): a zip archive (stored members,
// zip64 fields understood) holding `<folder>/data.pkl` (a pickled state dict whose tensors refer
// to storages by key) and `<folder>/data/<key>` (raw little-endian storages); the folder is named
// after the saved file (archive/, pytorch_model/, ...). Only the pickle opcodes (protocol 2, and 4's short forms) and
// globals that a state dict of plain tensors uses are accepted; anything else is an error naming
// it. Contiguous tensors are views of the storage, so tensors that share a storage (tied weights)
// share memory here too; strided ones (a saved transpose) are gathered into a copy.
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

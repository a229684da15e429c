// libFuzzer target: parse_torch_state_dict must answer any bytes with tensors or a mamba::Error.
#include <cstdint>
#include <cstring>
#include <memory>

#include "io/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto owner = std::shared_ptr<uint8_t[]>(new uint8_t[size + 1]);
  std::memcpy(owner.get(), data, size);
  try {
    mamba::io::TorchStateDict state = mamba::io::parse_torch_state_dict(owner.get(), size, owner, "fuzz");
    for (const auto& [name, tensor] : state.tensors)
      if (tensor.numel() > 0) (void)tensor.item(tensor.numel() - 1);  // touch the last element
  } catch (const mamba::Error&) {
  }
  return 0;
}

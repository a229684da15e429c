// libFuzzer target: parse_safetensors must answer any bytes with tensors or a mamba::Error.
#include <cstdint>
#include <cstring>
#include <memory>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A private copy, so that views outliving the call would be caught by AddressSanitizer.
  auto owner = std::shared_ptr<uint8_t[]>(new uint8_t[size + 1]);
  std::memcpy(owner.get(), data, size);
  try {
    mamba::io::SafetensorsFile file = mamba::io::parse_safetensors(owner.get(), size, owner, "fuzz");
    for (const auto& [name, tensor] : file.tensors)
      if (tensor.numel() > 0) (void)tensor.item(tensor.numel() - 1);  // touch the last element
  } catch (const mamba::Error&) {
  }
  return 0;
}

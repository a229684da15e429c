// Element types of tensors, and the conversions between the 16-bit float formats and float32.
// bfloat16: the top 16 bits of an IEEE float32 (round to nearest even on conversion).
// float16: IEEE half precision (1 sign, 5 exponent, 10 mantissa bits).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace mamba {

enum class DType : uint8_t { f64, f32, bf16, f16, i64, i32, u16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "f64", "f32", "bf16", ...
DType dtype_from_name(const std::string& name, const std::string& what);  // throws naming `what`
bool dtype_is_float(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);  // keep NaN a NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest, ties to even
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements between any two dtypes (integers convert by value).
void convert_elements(const void* src, DType src_type, void* dst, DType dst_type, size_t n);

}  // namespace mamba

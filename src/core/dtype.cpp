#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace mamba {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::bf16:
    case DType::f16:
    case DType::u16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f64: return "f64";
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i64: return "i64";
    case DType::i32: return "i32";
    case DType::u16: return "u16";
  }
  return "?";
}

DType dtype_from_name(const std::string& name, const std::string& what) {
  for (DType t : {DType::f64, DType::f32, DType::bf16, DType::f16, DType::i64, DType::i32, DType::u16})
    if (name == dtype_name(t)) return t;
  fail(what, ": unknown dtype '", name, "' (expected f64, f32, bf16, f16, i64, i32 or u16)");
}

bool dtype_is_float(DType t) {
  return t == DType::f64 || t == DType::f32 || t == DType::bf16 || t == DType::f16;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: value = mantissa * 2^-24
    float f = std::ldexp(float(mantissa), -24);
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs_bits >= 0x477ff000u) return sign | 0x7c00u;  // rounds past the largest half: inf
  if (abs_bits < 0x38800000u) {                        // below the smallest normal half
    float a;
    std::memcpy(&a, &abs_bits, 4);
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));  // multiples of 2^-24, ties to even
  }
  uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
  return sign | uint16_t((rounded - (112u << 23)) >> 13);
}

namespace {
double load_as_double(const void* src, DType t, size_t i) {
  switch (t) {
    case DType::f64: return static_cast<const double*>(src)[i];
    case DType::f32: return static_cast<const float*>(src)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::i64: return double(static_cast<const int64_t*>(src)[i]);
    case DType::i32: return static_cast<const int32_t*>(src)[i];
    case DType::u16: return static_cast<const uint16_t*>(src)[i];
  }
  return 0;
}
}  // namespace

void convert_elements(const void* src, DType src_type, void* dst, DType dst_type, size_t n) {
  if (src_type == dst_type) {
    std::memcpy(dst, src, n * dtype_size(src_type));
    return;
  }
  // Fast paths for the conversions on load paths; everything else goes through double.
  if (src_type == DType::f32 && dst_type == DType::bf16) {
    auto s = static_cast<const float*>(src);
    auto d = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
    return;
  }
  if (src_type == DType::bf16 && dst_type == DType::f32) {
    auto s = static_cast<const uint16_t*>(src);
    auto d = static_cast<float*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
    return;
  }
  if (src_type == DType::i64 && dst_type == DType::i32) {
    auto s = static_cast<const int64_t*>(src);
    auto d = static_cast<int32_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = int32_t(s[i]);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    double v = load_as_double(src, src_type, i);
    switch (dst_type) {
      case DType::f64: static_cast<double*>(dst)[i] = v; break;
      case DType::f32: static_cast<float*>(dst)[i] = float(v); break;
      case DType::bf16: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(float(v)); break;
      case DType::f16: static_cast<uint16_t*>(dst)[i] = f32_to_f16(float(v)); break;
      case DType::i64: static_cast<int64_t*>(dst)[i] = int64_t(v); break;
      case DType::i32: static_cast<int32_t*>(dst)[i] = int32_t(v); break;
      case DType::u16: static_cast<uint16_t*>(dst)[i] = uint16_t(v); break;
    }
  }
}

}  // namespace mamba

// Helpers for the io tests: a scratch folder removed afterwards, the fixtures folder, random
// tensors, and little-endian byte assembly for hand-built (often deliberately broken) files.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "core/rng.h"
#include "core/tensor.h"

namespace mamba::io::test {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("mambacpp_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string fixture(const std::string& name) { return std::string(MAMBACPP_FIXTURES) + "/" + name; }

#define SKIP_WITHOUT_FIXTURE(name)                                \
  if (!std::filesystem::exists(::mamba::io::test::fixture(name))) \
  GTEST_SKIP() << "fixture " << ::mamba::io::test::fixture(name) << " is absent"

// Random non-zero values (integers for integer dtypes) in `dtype`.
inline Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> values(size_t(shape_numel(shape)));
  for (double& v : values) v = dtype_is_float(dtype) ? rng.normal() + 0.1 : double(1 + rng.below(1000));
  return Tensor::from_vector(values, shape, dtype);
}

inline bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

template <typename T>
void append_le(std::string& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out += char(uint64_t(value) >> (8 * i) & 0xff);
}

inline std::string write_bytes(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr) << path;
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  return path;
}

inline std::string read_bytes(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr) << path;
  std::string bytes;
  char buffer[65536];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, f)) > 0;) bytes.append(buffer, n);
  std::fclose(f);
  return bytes;
}

// Expects `body` to throw mamba::Error whose message contains every one of `parts`.
template <typename Body>
void expect_error(Body body, std::initializer_list<std::string> parts) {
  try {
    body();
    ADD_FAILURE() << "no mamba::Error thrown (expected one mentioning " << *parts.begin() << ")";
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message: " << e.what() << "\nmissing: " << part;
  }
}

}  // namespace mamba::io::test

#include "io/file_view.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace mamba::io {

MappedFile::~MappedFile() {
  if (data != nullptr) munmap(data, size);
}

std::shared_ptr<MappedFile> map_file(const std::string& path, const std::string& what) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open ", what, " (", std::strerror(errno), ")");
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    fail(path, ": not a regular file (expected ", what, ")");
  }
  auto file = std::make_shared<MappedFile>();
  file->size = size_t(info.st_size);
  if (file->size == 0) {
    close(fd);
    fail(path, ": file is empty (expected ", what, ")");
  }
  // Private and writable: tensors over the mapping may be updated in place (training) without
  // changing the file; untouched pages stay shared with the page cache.
  void* p = mmap(nullptr, file->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (p == MAP_FAILED) fail(path, ": cannot memory-map ", what, " (", std::strerror(map_errno), ")");
  file->data = p;
  return file;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MAMBA_CHECK(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream text;
  text << in.rdbuf();
  MAMBA_CHECK(!in.bad(), path, ": read failed");
  return text.str();
}

int64_t checked_numel(const Shape& shape, size_t element_size, const std::string& what) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    MAMBA_CHECK(d >= 0, what, ": negative dimension in shape ", shape_string(shape));
    MAMBA_CHECK(!__builtin_mul_overflow(numel, d, &numel), what, ": shape ", shape_string(shape), " is too large");
  }
  int64_t bytes = 0;
  MAMBA_CHECK(!__builtin_mul_overflow(numel, int64_t(element_size), &bytes), what, ": shape ", shape_string(shape),
              " is too large");
  return numel;
}

Tensor view_or_aligned_copy(const uint8_t* bytes, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive) {
  if (reinterpret_cast<uintptr_t>(bytes) % dtype_size(dtype) == 0)
    return Tensor::wrap(const_cast<uint8_t*>(bytes), shape, dtype, std::move(keep_alive));
  Tensor copy = Tensor::empty(shape, dtype);
  std::memcpy(copy.raw(), bytes, copy.nbytes());
  return copy;
}

}  // namespace mamba::io

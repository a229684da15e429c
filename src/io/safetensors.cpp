#include "io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "io/file_view.h"

namespace mamba::io {
namespace {

using nlohmann::json;

// safetensors dtype codes of the dtypes this program has.
constexpr std::pair<DType, const char*> kDTypeCodes[] = {
    {DType::f64, "F64"}, {DType::f32, "F32"}, {DType::bf16, "BF16"}, {DType::f16, "F16"},
    {DType::i64, "I64"}, {DType::i32, "I32"}, {DType::u16, "U16"},
};

const char* safetensors_code(DType t) {
  for (const auto& [dtype, code] : kDTypeCodes)
    if (dtype == t) return code;
  fail("safetensors: no code for dtype ", dtype_name(t));
}

DType dtype_from_code(const std::string& code, const std::string& tensor, const std::string& source) {
  for (const auto& [dtype, known] : kDTypeCodes)
    if (code == known) return dtype;
  fail("unsupported dtype ", code, " in tensor ", tensor, " of ", source,
       " (supported: F64, F32, BF16, F16, I64, I32, U16)");
}

// Parses the header, refusing duplicate names (the JSON parser would silently keep the last).
json parse_header(const char* begin, const char* end, const std::string& source) {
  std::set<std::string> names;
  std::string duplicate;
  json::parser_callback_t remember_names = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && !names.insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, remember_names);
  } catch (const json::exception& e) {
    fail(source, ": safetensors header is not valid JSON (", e.what(), ")");
  }
  MAMBA_CHECK(duplicate.empty(), source, ": tensor ", duplicate, " appears twice in the safetensors header");
  MAMBA_CHECK(header.is_object(), source, ": safetensors header is not a JSON object");
  return header;
}

uint64_t unsigned_value(const json& v, const std::string& what) {
  MAMBA_CHECK(v.is_number_unsigned(), what, " must be a non-negative integer, got ", v.dump());
  return v.get<uint64_t>();
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& name, const json& info, uint64_t data_size, const std::string& source) {
  std::string where = "tensor " + name + " of " + source;
  MAMBA_CHECK(info.is_object(), where, ": header entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    MAMBA_CHECK(info.contains(key), where, ": header entry has no '", key, "'");
  MAMBA_CHECK(info["dtype"].is_string(), where, ": dtype is not a string");
  Entry e{name, dtype_from_code(info["dtype"].get<std::string>(), name, source), {}, 0, 0};
  const json& shape = info["shape"];
  MAMBA_CHECK(shape.is_array(), where, ": shape is not an array");
  for (const json& d : shape) {
    uint64_t dim = unsigned_value(d, where + ": shape dimension");
    MAMBA_CHECK(dim <= uint64_t(INT64_MAX), where, ": shape dimension ", dim, " is too large");
    e.shape.push_back(int64_t(dim));
  }
  int64_t numel = checked_numel(e.shape, dtype_size(e.dtype), where);
  const json& offsets = info["data_offsets"];
  MAMBA_CHECK(offsets.is_array() && offsets.size() == 2, where, ": data_offsets must be [begin, end]");
  e.begin = unsigned_value(offsets[0], where + ": data_offsets begin");
  e.end = unsigned_value(offsets[1], where + ": data_offsets end");
  MAMBA_CHECK(e.begin <= e.end, where, ": data_offsets [", e.begin, ", ", e.end, "] run backwards");
  MAMBA_CHECK(e.end <= data_size, where, ": data_offsets [", e.begin, ", ", e.end, "] reach past the end of the data (",
              data_size, " bytes; the file is truncated or the header lies)");
  uint64_t expected = uint64_t(numel) * dtype_size(e.dtype);
  MAMBA_CHECK(e.end - e.begin == expected, where, ": data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin,
              " bytes, but dtype ", info["dtype"].get<std::string>(), " × shape ", shape_string(e.shape), " needs ",
              expected);
  return e;
}

// An open temporary file next to `path` that becomes `path` on commit(), or vanishes.
class AtomicWriter {
 public:
  explicit AtomicWriter(const std::string& path) : path_(path), temp_(path + ".tmp") {
    fd_ = open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path_, ": cannot create temporary file ", temp_, " (", std::strerror(errno), ")");
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  ~AtomicWriter() {
    if (fd_ >= 0) {
      close(fd_);
      unlink(temp_.c_str());
    }
  }

  void write(const void* data, size_t size) {
    auto p = static_cast<const char*>(data);
    while (size > 0) {
      ssize_t n = ::write(fd_, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(path_, ": write failed (", std::strerror(errno), ")");
      p += n;
      size -= size_t(n);
    }
  }

  void commit() {
    if (fsync(fd_) != 0) fail(path_, ": fsync failed (", std::strerror(errno), ")");
    int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) {
      unlink(temp_.c_str());
      fail(path_, ": close failed (", std::strerror(errno), ")");
    }
    if (rename(temp_.c_str(), path_.c_str()) != 0) {
      int rename_errno = errno;
      unlink(temp_.c_str());
      fail(path_, ": cannot rename ", temp_, " into place (", std::strerror(rename_errno), ")");
    }
    // The rename is durable only once the folder's entry is on disk.
    std::string folder = std::filesystem::path(path_).parent_path().string();
    int dir = open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      fsync(dir);
      close(dir);
    }
  }

 private:
  std::string path_, temp_;
  int fd_ = -1;
};

}  // namespace

SafetensorsFile parse_safetensors(const void* data, size_t size, std::shared_ptr<void> keep_alive,
                                  const std::string& source) {
  auto bytes = static_cast<const uint8_t*>(data);
  MAMBA_CHECK(size >= 8, source, ": ", size, " bytes is too short for a safetensors file (no 8-byte header length)");
  uint64_t header_size = load_le<uint64_t>(bytes);
  MAMBA_CHECK(header_size <= size - 8, source, ": safetensors header length ", header_size,
              " reaches past the end of the ", size, "-byte file (truncated, or not a safetensors file)");
  const char* header_text = reinterpret_cast<const char*>(bytes + 8);
  json header = parse_header(header_text, header_text + header_size, source);
  const uint8_t* data_start = bytes + 8 + header_size;
  uint64_t data_size = size - 8 - header_size;

  SafetensorsFile file;
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      MAMBA_CHECK(info.is_object(), source, ": __metadata__ is not an object of strings");
      for (const auto& [key, value] : info.items()) {
        MAMBA_CHECK(value.is_string(), source, ": __metadata__ value of '", key, "' is not a string");
        file.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, info, data_size, source));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;  // empty tensors occupy no bytes
    MAMBA_CHECK(previous == nullptr || e.begin >= previous->end, "tensor ", e.name, " of ", source, ": data_offsets [",
                e.begin, ", ", e.end, "] overlap tensor ", previous ? previous->name : "", " [",
                previous ? previous->begin : 0, ", ", previous ? previous->end : 0, "]");
    previous = &e;
  }
  for (const Entry& e : entries)
    file.tensors[e.name] = view_or_aligned_copy(data_start + e.begin, e.shape, e.dtype, keep_alive);
  return file;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::shared_ptr<MappedFile> file = map_file(path, "a safetensors file");
  void* data = file->data;
  size_t size = file->size;
  return parse_safetensors(data, size, std::move(file), path);
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Widest elements first keeps every tensor aligned to its element size (the header is
  // padded to 8 bytes), as the reference writer does.
  std::vector<std::pair<std::string, Tensor>> order(tensors.begin(), tensors.end());
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second.dtype()) > dtype_size(b.second.dtype());
  });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : order) {
    MAMBA_CHECK(t.defined(), path, ": tensor ", name, " is empty (undefined) and cannot be saved");
    MAMBA_CHECK(name != "__metadata__", path, ": a tensor cannot be named __metadata__");
    header[name] = {
        {"dtype", safetensors_code(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = uint8_t(uint64_t(header_text.size()) >> (8 * i));

  AtomicWriter out(path);
  out.write(length, 8);
  out.write(header_text.data(), header_text.size());
  for (const auto& [name, t] : order) {
    Tensor host = t.device() == Device::cpu ? t : t.to(Device::cpu);
    out.write(host.raw(), host.nbytes());
  }
  out.commit();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicWriter out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

}  // namespace mamba::io

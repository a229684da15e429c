#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io_test_util.h"

namespace mamba::io {
namespace {

using test::expect_error;

// A safetensors file from a header text and data bytes (no validation: tests build lies).
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string bytes;
  test::append_le<uint64_t>(bytes, header.size());
  return bytes + header + data;
}

SafetensorsFile parse_bytes(const std::string& bytes) {
  auto owner = std::make_shared<std::string>(bytes);
  return parse_safetensors(owner->data(), owner->size(), owner, "test.safetensors");
}

// 6 float32 values, all non-zero.
std::string six_floats() {
  std::string data;
  for (float v : {1.5f, -2.0f, 3.25f, 0.5f, -7.0f, 11.0f}) data.append(reinterpret_cast<const char*>(&v), 4);
  return data;
}

TEST(SafetensorsTest, ReadsTheMamba1Fixture) {
  SKIP_WITHOUT_FIXTURE("mamba1/model.safetensors");
  SafetensorsFile file = read_safetensors(test::fixture("mamba1/model.safetensors"));
  EXPECT_EQ(file.tensors.size(), 22u);
  EXPECT_EQ(file.tensors.at("backbone.embeddings.weight").shape(), (Shape{512, 64}));
  EXPECT_EQ(file.tensors.at("backbone.layers.1.mixer.x_proj.weight").shape(), (Shape{36, 128}));
  EXPECT_EQ(file.tensors.at("backbone.layers.0.mixer.conv1d.weight").shape(), (Shape{128, 1, 4}));
  const Tensor& a_log = file.tensors.at("backbone.layers.0.mixer.A_log");
  EXPECT_EQ(a_log.dtype(), DType::f32);
  std::vector<double> values = a_log.to_double_vector();
  double sum_abs = 0;
  for (double v : values) {
    EXPECT_TRUE(std::isfinite(v));
    sum_abs += std::abs(v);
  }
  EXPECT_GT(sum_abs, 0);
  EXPECT_EQ(file.metadata.at("format"), "pt");
}

TEST(SafetensorsTest, TensorsAreViewsOfTheBuffer) {
  std::string header = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  auto owner = std::make_shared<std::string>(safetensors_bytes(header, six_floats()));
  SafetensorsFile file = parse_safetensors(owner->data(), owner->size(), owner, "view");
  const Tensor& w = file.tensors.at("w");
  EXPECT_EQ(w.raw(), owner->data() + 8 + header.size());
  EXPECT_EQ(w.item(4), -7.0);
  // The tensor keeps the buffer alive.
  std::weak_ptr<std::string> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(w.item(5), 11.0);
}

TEST(SafetensorsTest, UnalignedDataIsCopiedWithTheRightValues) {
  std::string header = R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[1,25]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  SafetensorsFile file = parse_bytes(safetensors_bytes(header, "x" + six_floats()));
  EXPECT_EQ(file.tensors.at("w").to_double_vector(), (std::vector<double>{1.5, -2.0, 3.25, 0.5, -7.0, 11.0}));
}

TEST(SafetensorsTest, RoundTripsEveryDtypeAndMetadata) {
  test::TempDir dir;
  std::map<std::string, Tensor> tensors;
  const DType dtypes[] = {DType::f64, DType::f32, DType::bf16, DType::f16, DType::i64, DType::i32, DType::u16};
  uint64_t seed = 1;
  for (DType t : dtypes) {
    // Odd element counts so that a careless layout would misalign the wider dtypes.
    tensors[std::string("a.") + dtype_name(t)] = test::random_tensor({3, 5}, t, seed++);
    tensors[std::string("b.") + dtype_name(t)] = test::random_tensor({7}, t, seed++);
  }
  tensors["scalar"] = test::random_tensor({}, DType::f32, seed++);
  tensors["empty"] = Tensor::empty({0, 4}, DType::f32);
  std::map<std::string, std::string> metadata{{"format", "pt"}, {"step", "12"}};
  std::string path = dir.file("model.safetensors");
  write_safetensors(path, tensors, metadata);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  std::string bytes = test::read_bytes(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  EXPECT_EQ(header_size % 8, 0u);

  SafetensorsFile file = read_safetensors(path);
  EXPECT_EQ(file.metadata, metadata);
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const Tensor& back = file.tensors.at(name);
    EXPECT_TRUE(test::same_bytes(back, t)) << name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(back.raw()) % dtype_size(back.dtype()), 0u) << name << " is misaligned";
  }
}

TEST(SafetensorsTest, WrittenTensorsAreContiguousFromOffsetZero) {
  test::TempDir dir;
  std::string path = dir.file("x.safetensors");
  write_safetensors(path,
                    {{"a", test::random_tensor({4}, DType::f16, 3)}, {"b", test::random_tensor({2}, DType::f64, 4)}});
  std::string bytes = test::read_bytes(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.substr(8, header_size));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({0, 16}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({16, 24}));
  EXPECT_EQ(bytes.size(), 8 + header_size + 24);
}

struct Lie {
  const char* what;
  std::string header;
  std::vector<std::string> message_parts;
};

TEST(SafetensorsTest, EveryLyingHeaderIsAnErrorNamingTheTensor) {
  const std::string data = six_floats();  // 24 bytes
  const Lie lies[] = {
      {"offsets past the end",
       R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})",
       {"tensor w", "past the end"}},
      {"bytes disagree with shape",
       R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,24]}})",
       {"tensor w", "needs 20"}},
      {"bytes disagree with dtype",
       R"({"w":{"dtype":"F64","shape":[6],"data_offsets":[0,24]}})",
       {"tensor w", "needs 48"}},
      {"overlap",
       R"({"v":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
       {"tensor w", "overlap tensor v"}},
      {"unknown dtype",
       R"({"w":{"dtype":"F8_E4M3","shape":[24],"data_offsets":[0,24]}})",
       {"unsupported dtype F8_E4M3 in tensor w of test.safetensors"}},
      {"negative shape", R"({"w":{"dtype":"F32","shape":[-6],"data_offsets":[0,24]}})", {"tensor w", "-6"}},
      {"huge shape",
       R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,24]}})",
       {"tensor w", "too large"}},
      {"shape overflowing int64",
       R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,24]}})",
       {"tensor w", "too large"}},
      {"fractional shape", R"({"w":{"dtype":"F32","shape":[6.5],"data_offsets":[0,24]}})", {"tensor w"}},
      {"backwards offsets", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[24,0]}})", {"tensor w", "backwards"}},
      {"one offset", R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[0]}})", {"tensor w", "[begin, end]"}},
      {"no dtype", R"({"w":{"shape":[6],"data_offsets":[0,24]}})", {"tensor w", "dtype"}},
      {"entry not an object", R"({"w":[1,2]})", {"tensor w"}},
      {"duplicate names",
       R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       {"tensor w appears twice"}},
      {"metadata not strings",
       R"({"__metadata__":{"a":1},"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}})",
       {"__metadata__", "'a'"}},
      {"not JSON", R"({"w":{"dtype":"F32",)", {"test.safetensors", "not valid JSON"}},
      {"not an object", R"([1,2,3])", {"test.safetensors", "not a JSON object"}},
  };
  for (const Lie& lie : lies) {
    SCOPED_TRACE(lie.what);
    try {
      parse_bytes(safetensors_bytes(lie.header, data));
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      for (const std::string& part : lie.message_parts)
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  }
}

TEST(SafetensorsTest, HeaderLengthPastTheEndIsAnError) {
  std::string bytes;
  test::append_le<uint64_t>(bytes, 1000);
  bytes += "{}";
  expect_error([&] { parse_bytes(bytes); }, {"test.safetensors", "header length 1000"});
  std::string huge;
  test::append_le<uint64_t>(huge, ~uint64_t(0));
  expect_error([&] { parse_bytes(huge + "{}"); }, {"header length"});
  expect_error([&] { parse_bytes("abc"); }, {"too short"});
}

TEST(SafetensorsTest, EveryTruncationOfAValidFileIsAnError) {
  test::TempDir dir;
  std::string path = dir.file("t.safetensors");
  write_safetensors(
      path, {{"a", test::random_tensor({3, 4}, DType::f32, 7)}, {"b", test::random_tensor({5}, DType::bf16, 8)}});
  std::string bytes = test::read_bytes(path);
  EXPECT_EQ(parse_bytes(bytes).tensors.size(), 2u);
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    EXPECT_THROW(parse_bytes(bytes.substr(0, cut)), Error) << "cut at " << cut;
  // And through the file reader: an empty file, and a truncated one.
  expect_error([&] { read_safetensors(test::write_bytes(dir.file("empty.safetensors"), "")); }, {"empty"});
  std::string truncated = dir.file("truncated.safetensors");
  test::write_bytes(truncated, bytes.substr(0, bytes.size() - 3));
  expect_error([&] { read_safetensors(truncated); }, {truncated, "past the end"});
  expect_error([&] { read_safetensors(dir.file("absent.safetensors")); }, {"absent.safetensors", "cannot open"});
}

TEST(SafetensorsTest, WriteFileAtomicReplacesTheFile) {
  test::TempDir dir;
  std::string path = dir.file("config.json");
  write_file_atomic(path, "first");
  write_file_atomic(path, "second, longer");
  EXPECT_EQ(test::read_bytes(path), "second, longer");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  expect_error([&] { write_file_atomic(dir.file("no/such/folder/x"), "x"); }, {"no/such/folder/x"});
}

}  // namespace
}  // namespace mamba::io

#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io_test_util.h"

namespace mamba::io {
namespace {

using test::append_le;
using test::expect_error;

// ---- A tiny zip writer (stored members), optionally with zip64 fields. ----
struct Member {
  std::string name, bytes;
  uint16_t method = 0;
};

std::string build_zip(const std::vector<Member>& members, bool zip64 = false) {
  std::string out, directory;
  for (const Member& m : members) {
    uint64_t local_offset = out.size();
    append_le<uint32_t>(out, 0x04034b50);
    append_le<uint16_t>(out, 20);
    append_le<uint16_t>(out, 0);  // flags
    append_le<uint16_t>(out, m.method);
    append_le<uint32_t>(out, 0);  // time, date
    append_le<uint32_t>(out, 0);  // crc (not checked)
    append_le<uint32_t>(out, uint32_t(m.bytes.size()));
    append_le<uint32_t>(out, uint32_t(m.bytes.size()));
    append_le<uint16_t>(out, uint16_t(m.name.size()));
    append_le<uint16_t>(out, 3);  // extra: 3 bytes of padding, as torch aligns data
    out += m.name + "pad" + m.bytes;

    append_le<uint32_t>(directory, 0x02014b50);
    append_le<uint16_t>(directory, 45);
    append_le<uint16_t>(directory, 45);
    append_le<uint16_t>(directory, 0);
    append_le<uint16_t>(directory, m.method);
    append_le<uint32_t>(directory, 0);
    append_le<uint32_t>(directory, 0);
    uint32_t size32 = zip64 ? 0xFFFFFFFFu : uint32_t(m.bytes.size());
    append_le<uint32_t>(directory, size32);
    append_le<uint32_t>(directory, size32);
    append_le<uint16_t>(directory, uint16_t(m.name.size()));
    append_le<uint16_t>(directory, zip64 ? 28 : 0);
    append_le<uint16_t>(directory, 0);  // comment
    append_le<uint16_t>(directory, 0);  // disk
    append_le<uint16_t>(directory, 0);
    append_le<uint32_t>(directory, 0);
    append_le<uint32_t>(directory, zip64 ? 0xFFFFFFFFu : uint32_t(local_offset));
    directory += m.name;
    if (zip64) {
      append_le<uint16_t>(directory, 1);
      append_le<uint16_t>(directory, 24);
      append_le<uint64_t>(directory, m.bytes.size());
      append_le<uint64_t>(directory, m.bytes.size());
      append_le<uint64_t>(directory, local_offset);
    }
  }
  uint64_t directory_offset = out.size();
  out += directory;
  if (zip64) {
    uint64_t record = out.size();
    append_le<uint32_t>(out, 0x06064b50);
    append_le<uint64_t>(out, 44);
    append_le<uint16_t>(out, 45);
    append_le<uint16_t>(out, 45);
    append_le<uint32_t>(out, 0);
    append_le<uint32_t>(out, 0);
    append_le<uint64_t>(out, members.size());
    append_le<uint64_t>(out, members.size());
    append_le<uint64_t>(out, directory.size());
    append_le<uint64_t>(out, directory_offset);
    append_le<uint32_t>(out, 0x07064b50);
    append_le<uint32_t>(out, 0);
    append_le<uint64_t>(out, record);
    append_le<uint32_t>(out, 1);
  }
  append_le<uint32_t>(out, 0x06054b50);
  append_le<uint32_t>(out, 0);
  append_le<uint16_t>(out, zip64 ? 0xFFFF : uint16_t(members.size()));
  append_le<uint16_t>(out, zip64 ? 0xFFFF : uint16_t(members.size()));
  append_le<uint32_t>(out, zip64 ? 0xFFFFFFFFu : uint32_t(directory.size()));
  append_le<uint32_t>(out, zip64 ? 0xFFFFFFFFu : uint32_t(directory_offset));
  append_le<uint16_t>(out, 0);
  return out;
}

// ---- Pickle fragments, as torch.save writes them. ----
std::string pickle_string(const std::string& s) {
  std::string out = "X";
  append_le<uint32_t>(out, uint32_t(s.size()));
  return out + s;
}
std::string pickle_int(int64_t v) {
  std::string out = "\x8a\x08";  // LONG1, 8 bytes
  append_le<uint64_t>(out, uint64_t(v));
  return out;
}
std::string pickle_int_tuple(const std::vector<int64_t>& values) {
  std::string out = "(";
  for (int64_t v : values) out += pickle_int(v);
  return out + "t";
}
std::string pickle_tensor(const std::string& storage_class, const std::string& key, int64_t numel, int64_t offset,
                          const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
  return "ctorch._utils\n_rebuild_tensor_v2\n((" + pickle_string("storage") + "ctorch\n" + storage_class + "\n" +
         pickle_string(key) + pickle_string("cpu") + pickle_int(numel) + "tQ" + pickle_int(offset) +
         pickle_int_tuple(size) + pickle_int_tuple(stride) + "\x89" + "ccollections\nOrderedDict\n)R" + "tR";
}
// A state dict pickle: {name: tensor pickle, ...}.
std::string pickle_state_dict(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out = std::string("\x80\x02}q", 4) + '\0' + "(";  // PROTO 2, EMPTY_DICT, BINPUT 0, MARK
  for (const auto& [name, tensor] : entries) out += pickle_string(name) + tensor;
  return out + "u.";
}

std::string float_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
}

TorchStateDict parse_bytes(const std::string& bytes) {
  auto owner = std::make_shared<std::string>(bytes);
  return parse_torch_state_dict(owner->data(), owner->size(), owner, "test.bin");
}

TEST(TorchPickleTest, ReadsTheStateSpacesFixtureLikeTheSafetensorsOne) {
  SKIP_WITHOUT_FIXTURE("mamba1_original/pytorch_model.bin");
  SKIP_WITHOUT_FIXTURE("mamba1/model.safetensors");
  TorchStateDict state = read_torch_state_dict(test::fixture("mamba1_original/pytorch_model.bin"));
  SafetensorsFile reference = read_safetensors(test::fixture("mamba1/model.safetensors"));
  EXPECT_EQ(state.tensors.size(), reference.tensors.size() + 1);  // + lm_head.weight
  for (const auto& [name, expected] : reference.tensors) {
    std::string stored = name == "backbone.embeddings.weight" ? "backbone.embedding.weight" : name;
    ASSERT_TRUE(state.tensors.contains(stored)) << stored;
    EXPECT_TRUE(test::same_bytes(state.tensors.at(stored), expected)) << name;
  }
  // The tied LM head is the embedding's memory, not a copy.
  EXPECT_EQ(state.tensors.at("lm_head.weight").raw(), state.tensors.at("backbone.embedding.weight").raw());
  EXPECT_EQ(state.storage_of.at("lm_head.weight"), state.storage_of.at("backbone.embedding.weight"));
  EXPECT_NE(state.storage_of.at("backbone.norm_f.weight"), state.storage_of.at("lm_head.weight"));
}

TEST(TorchPickleTest, StridedOffsetAndSharedStorages) {
  std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8};
  std::string pickle = pickle_state_dict({
      {"matrix", pickle_tensor("FloatStorage", "0", 8, 0, {2, 3}, {3, 1})},
      {"transposed", pickle_tensor("FloatStorage", "0", 8, 0, {3, 2}, {1, 3})},
      {"tail", pickle_tensor("FloatStorage", "0", 8, 5, {3}, {1})},
      {"half", pickle_tensor("BFloat16Storage", "1", 2, 0, {2}, {1})},
  });
  uint16_t bf16[2] = {f32_to_bf16(1.5f), f32_to_bf16(-3.0f)};
  TorchStateDict state = parse_bytes(build_zip({{"archive/data.pkl", pickle},
                                                {"archive/byteorder", "little"},
                                                {"archive/data/0", float_bytes(values)},
                                                {"archive/data/1", std::string(reinterpret_cast<char*>(bf16), 4)}}));
  EXPECT_EQ(state.tensors.at("matrix").to_double_vector(), (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(state.tensors.at("transposed").to_double_vector(), (std::vector<double>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(state.tensors.at("tail").to_double_vector(), (std::vector<double>{6, 7, 8}));
  EXPECT_EQ(state.tensors.at("half").dtype(), DType::bf16);
  EXPECT_EQ(state.tensors.at("half").to_double_vector(), (std::vector<double>{1.5, -3.0}));
  EXPECT_EQ(static_cast<const float*>(state.tensors.at("tail").raw()) - 5,
            static_cast<const float*>(state.tensors.at("matrix").raw()));
  EXPECT_EQ(state.storage_of.at("transposed"), "0");
  EXPECT_EQ(state.storage_of.at("half"), "1");
}

TEST(TorchPickleTest, Zip64FieldsAreRead) {
  std::string pickle = pickle_state_dict({{"w", pickle_tensor("FloatStorage", "0", 3, 0, {3}, {1})}});
  TorchStateDict state = parse_bytes(
      build_zip({{"model/data.pkl", pickle}, {"model/data/0", float_bytes({0.25f, -4, 9})}}, /*zip64=*/true));
  EXPECT_EQ(state.tensors.at("w").to_double_vector(), (std::vector<double>{0.25, -4, 9}));
}

TEST(TorchPickleTest, MalformedArchivesAreClearErrors) {
  std::string good_pickle = pickle_state_dict({{"w", pickle_tensor("FloatStorage", "0", 3, 0, {3}, {1})}});
  std::string storage = float_bytes({1, 2, 3});
  expect_error(
      [&] {
        parse_bytes(build_zip({{"a/data.pkl", good_pickle}, {"a/data/0", storage, 8}}));
      },
      {"test.bin", "a/data/0", "compressed"});
  expect_error([&] { parse_bytes(build_zip({{"a/other.pkl", good_pickle}})); }, {"no data.pkl"});
  expect_error([&] { parse_bytes(build_zip({{"a/data.pkl", good_pickle}})); }, {"storage 0", "a/data/0"});
  expect_error(
      [&] {
        parse_bytes(build_zip({{"a/data.pkl", good_pickle}, {"a/data/0", storage.substr(0, 8)}}));
      },
      {"storage 0", "3 elements"});
  expect_error([&] { parse_bytes("definitely not a zip archive"); }, {"test.bin", "not a zip archive"});
  expect_error(
      [&] {
        parse_bytes(build_zip({{"a/data.pkl", good_pickle}, {"a/byteorder", "big"}, {"a/data/0", storage}}));
      },
      {"big-endian"});

  auto with_pickle = [&](const std::string& pickle) {
    return build_zip({{"a/data.pkl", pickle}, {"a/data/0", storage}});
  };
  expect_error(
      [&] {
        parse_bytes(
            with_pickle("\x80\x02"
                        "cos\nsystem\n" +
                        pickle_string("ls") + "\x85R."));
      },
      {"os.system"});
  expect_error(
      [&] {
        parse_bytes(with_pickle(pickle_state_dict({{"w", pickle_tensor("FloatStorage", "0", 3, 1, {3}, {1})}})));
      },
      {"storage 0", "reach element 3"});
  expect_error(
      [&] {
        parse_bytes(with_pickle(pickle_state_dict({{"w", pickle_tensor("FloatStorage", "0", 3, 0, {6}, {0})}})));
      },
      {"storage 0", "expanded"});
  expect_error(
      [&] {
        parse_bytes(with_pickle(pickle_state_dict({{"w", pickle_tensor("FloatStorage", "0", 3, 0, {-1}, {1})}})));
      },
      {"storage 0", "negative"});
  expect_error(
      [&] {
        parse_bytes(with_pickle(pickle_state_dict({{"w", pickle_tensor("ByteStorage", "0", 3, 0, {3}, {1})}})));
      },
      {"torch.ByteStorage"});
  expect_error(
      [&] {
        parse_bytes(with_pickle(pickle_state_dict({{"w", pickle_int(3)}})));
      },
      {"entry w", "not a tensor"});
  expect_error([&] { parse_bytes(with_pickle(good_pickle.substr(0, good_pickle.size() - 1))); }, {"truncated pickle"});
  expect_error([&] { parse_bytes(with_pickle("\x80\x02u.")); }, {"MARK"});
  expect_error([&] { parse_bytes(with_pickle("\x80\x02h\x05.")); }, {"memo entry 5"});
  expect_error([&] { parse_bytes(with_pickle("\x80\x02\xff.")); }, {"opcode 0xff"});
}

// Written by Python's pickler and zipfile (fuzz/make_torch_seed.py): an OrderedDict root, MEMO
// reuse of a tensor, a strided view and a bf16 tensor at an offset.
TEST(TorchPickleTest, ReadsAFileWrittenByPythonsPickler) {
  TorchStateDict state = read_torch_state_dict(std::string(MAMBACPP_SOURCE_DIR) + "/fuzz/seeds/torch_small.bin");
  EXPECT_EQ(state.tensors.size(), 4u);
  EXPECT_EQ(state.tensors.at("backbone.embedding.weight").to_double_vector(),
            (std::vector<double>{1, -2, 3, 4.5, 5, -6}));
  EXPECT_EQ(state.tensors.at("t").to_double_vector(), (std::vector<double>{1, 4.5, -2, 5, 3, -6}));
  EXPECT_EQ(state.tensors.at("h").to_double_vector(), (std::vector<double>{-3, 2, 1}));
  EXPECT_EQ(state.tensors.at("lm_head.weight").raw(), state.tensors.at("backbone.embedding.weight").raw());
}

// Whatever the damage, the reader answers with a tensor map or a mamba::Error.
TEST(TorchPickleTest, TruncatedAndCorruptedFixtureNeverCrashes) {
  SKIP_WITHOUT_FIXTURE("mamba1_original/pytorch_model.bin");
  std::string bytes = test::read_bytes(test::fixture("mamba1_original/pytorch_model.bin"));
  Rng rng(42);
  for (int i = 0; i < 60; ++i) {
    size_t cut = size_t(rng.below(bytes.size()));
    EXPECT_THROW(parse_torch_state_dict(bytes.data(), cut, nullptr, "cut.bin"), Error) << "cut at " << cut;
  }
  int accepted = 0;
  std::string damaged = bytes;
  for (int i = 0; i < 300; ++i) {
    // Damage the pickle (first 2.3 kB) or the zip directory (last 3 kB), parse, repair.
    size_t region = rng.below(2) ? 0 : bytes.size() - 3000;
    size_t span = region == 0 ? 2300 : 3000;
    size_t spots[3];
    for (size_t& spot : spots) {
      spot = region + rng.below(span);
      damaged[spot] = char(rng.below(256));
    }
    try {
      parse_torch_state_dict(damaged.data(), damaged.size(), nullptr, "damaged.bin");
      ++accepted;
    } catch (const Error&) {
    }
    for (size_t spot : spots) damaged[spot] = bytes[spot];
  }
  EXPECT_LT(accepted, 300);
}

}  // namespace
}  // namespace mamba::io

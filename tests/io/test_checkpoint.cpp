#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace mamba::io {
namespace {

using test::expect_error;

ModelConfig tiny_config() {
  ModelConfig c = parse_config(
      {{"model_type", "mamba"}, {"hidden_size", 8}, {"num_hidden_layers", 1}, {"vocab_size", 12}, {"state_size", 4}},
      "tiny");
  c.validate("tiny");
  return c;
}

TensorMap tiny_tensors(DType dtype) {
  return {{"backbone.embeddings.weight", test::random_tensor({12, 8}, dtype, 1)},
          {"backbone.layers.0.mixer.A_log", test::random_tensor({16, 4}, DType::f32, 2)},
          {"backbone.layers.0.mixer.in_proj.weight", test::random_tensor({32, 8}, dtype, 3)},
          {"backbone.norm_f.weight", test::random_tensor({8}, dtype, 4)}};
}

void expect_same_tensors(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.contains(name)) << name;
    EXPECT_TRUE(test::same_bytes(t, b.at(name))) << name;
  }
}

TEST(CheckpointTest, LoadsTheHuggingFaceFixtures) {
  SKIP_WITHOUT_FIXTURE("mamba2/model.safetensors");
  Checkpoint v1 = load_checkpoint(test::fixture("mamba1"));
  EXPECT_EQ(v1.tensors.size(), 22u);
  EXPECT_FALSE(v1.tensors.contains("lm_head.weight"));
  EXPECT_EQ(v1.tensors.at("backbone.embeddings.weight").shape(), (Shape{512, 64}));
  EXPECT_NE(v1.weights_path.find("model.safetensors"), std::string::npos);
  Checkpoint v2 = load_checkpoint(test::fixture("mamba2"));
  EXPECT_EQ(v2.config.model_type, "mamba2");
  EXPECT_EQ(v2.tensors.at("backbone.layers.1.mixer.in_proj.weight").shape(),
            (Shape{2 * 128 + 2 * 2 * 16 + 8, 64}));  // 2D + 2GN + H
  EXPECT_EQ(v2.tensors.at("backbone.layers.0.mixer.conv1d.weight").shape(), (Shape{128 + 2 * 2 * 16, 1, 4}));
}

TEST(CheckpointTest, StateSpacesFixtureMatchesTheHuggingFaceOne) {
  SKIP_WITHOUT_FIXTURE("mamba1_original/pytorch_model.bin");
  Checkpoint original = load_checkpoint(test::fixture("mamba1_original"));
  Checkpoint hf = load_checkpoint(test::fixture("mamba1"));
  expect_same_tensors(original.tensors, hf.tensors);  // renamed embedding, tied head dropped
  EXPECT_EQ(original.config.vocab_size, 509);
  EXPECT_EQ(original.config.padded_vocab_size(), 512);
  EXPECT_EQ(original.config.storage_dtype, DType::f32);
  EXPECT_TRUE(original.config.tie_embeddings);
}

TEST(CheckpointTest, SaveThenLoadRoundTripsInEveryStorageDtype) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dtype));
    test::TempDir dir;
    std::string folder = dir.file("nested/model");
    ModelConfig config = tiny_config();
    config.storage_dtype = dtype;
    TensorMap tensors = tiny_tensors(dtype);
    save_checkpoint(folder, config, tensors, {{"step", "3"}});
    EXPECT_FALSE(std::filesystem::exists(folder + "/model.safetensors.tmp"));
    EXPECT_FALSE(std::filesystem::exists(folder + "/config.json.tmp"));
    Checkpoint back = load_checkpoint(folder);
    expect_same_tensors(tensors, back.tensors);
    EXPECT_EQ(back.config.storage_dtype, dtype);
    EXPECT_EQ(back.config.d_model, 8);
    EXPECT_EQ(back.config.d_state, 4);
    SafetensorsFile file = read_safetensors(folder + "/model.safetensors");
    EXPECT_EQ(file.metadata.at("format"), "pt");
    EXPECT_EQ(file.metadata.at("step"), "3");
  }
}

TEST(CheckpointTest, LoadsShardsThroughTheIndex) {
  test::TempDir dir;
  ModelConfig config = tiny_config();
  TensorMap tensors = tiny_tensors(DType::f32);
  write_file_atomic(dir.file("config.json"), to_huggingface_json(config).dump());
  TensorMap first(tensors.begin(), std::next(tensors.begin(), 2));
  TensorMap second(std::next(tensors.begin(), 2), tensors.end());
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), first);
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), second);
  nlohmann::json index = {{"metadata", {{"total_size", 1234}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : first) index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, t] : second) index["weight_map"][name] = "model-00002-of-00002.safetensors";
  write_file_atomic(dir.file("model.safetensors.index.json"), index.dump());
  Checkpoint loaded = load_checkpoint(dir.path().string());
  expect_same_tensors(tensors, loaded.tensors);
  EXPECT_NE(loaded.weights_path.find("index.json"), std::string::npos);

  index["weight_map"]["backbone.layers.0.norm.weight"] = "model-00002-of-00002.safetensors";
  write_file_atomic(dir.file("model.safetensors.index.json"), index.dump());
  expect_error([&] { load_checkpoint(dir.path().string()); },
               {"model-00002-of-00002.safetensors", "backbone.layers.0.norm.weight", "not in this shard"});
  index["weight_map"]["backbone.layers.0.norm.weight"] = "../elsewhere.safetensors";
  write_file_atomic(dir.file("model.safetensors.index.json"), index.dump());
  expect_error([&] { load_checkpoint(dir.path().string()); }, {"../elsewhere.safetensors", "same folder"});
  index["weight_map"]["backbone.layers.0.norm.weight"] = "model-00003-of-00002.safetensors";
  write_file_atomic(dir.file("model.safetensors.index.json"), index.dump());
  expect_error([&] { load_checkpoint(dir.path().string()); }, {"model-00003-of-00002.safetensors", "does not exist"});
}

TEST(CheckpointTest, TiedHeadIsDroppedOnlyWhenItIsTheEmbedding) {
  test::TempDir dir;
  ModelConfig config = tiny_config();
  TensorMap tensors = tiny_tensors(DType::f32);
  tensors["lm_head.weight"] = tensors["backbone.embeddings.weight"].clone();
  save_checkpoint(dir.path().string(), config, tensors);
  EXPECT_FALSE(load_checkpoint(dir.path().string()).tensors.contains("lm_head.weight"));

  tensors["lm_head.weight"] = test::random_tensor({12, 8}, DType::f32, 99);
  config.tie_embeddings = false;
  save_checkpoint(dir.path().string(), config, tensors);
  Checkpoint untied = load_checkpoint(dir.path().string());
  ASSERT_TRUE(untied.tensors.contains("lm_head.weight"));
  EXPECT_TRUE(test::same_bytes(untied.tensors.at("lm_head.weight"), tensors["lm_head.weight"]));
  EXPECT_FALSE(untied.config.tie_embeddings);
}

TEST(CheckpointTest, MissingPiecesAreClearErrors) {
  test::TempDir dir;
  expect_error([&] { load_checkpoint(dir.file("absent")); }, {dir.file("absent"), "no such folder"});
  test::write_bytes(dir.file("plain_file"), "x");
  expect_error([&] { load_checkpoint(dir.file("plain_file")); }, {"plain_file", "not a folder"});
  expect_error([&] { load_checkpoint(dir.path().string()); }, {"no config.json"});
  write_file_atomic(dir.file("config.json"), to_huggingface_json(tiny_config()).dump());
  expect_error([&] { load_checkpoint(dir.path().string()); },
               {dir.path().string(), "no weights", "model.safetensors", "pytorch_model.bin"});
  test::write_bytes(dir.file("pytorch_model.bin"), "PK not really");
  expect_error([&] { load_checkpoint(dir.path().string()); }, {"pytorch_model.bin", "zip archive"});
}

}  // namespace
}  // namespace mamba::io

#include "io/config.h"
#include "io_test_util.h"

namespace mamba::io {
namespace {

using nlohmann::json;
using test::expect_error;

json minimal_mamba() {
  return {{"model_type", "mamba"}, {"hidden_size", 48}, {"num_hidden_layers", 3}, {"vocab_size", 100}};
}

TEST(ConfigTest, ReadsTheHuggingFaceMamba1Fixture) {
  SKIP_WITHOUT_FIXTURE("mamba1/config.json");
  ModelConfig c = load_config(test::fixture("mamba1"));
  EXPECT_EQ(c.model_type, "mamba");
  EXPECT_EQ(c.dialect, "huggingface");
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.padded_vocab_size(), 512);
  EXPECT_EQ(c.d_state, 16);
  EXPECT_EQ(c.d_conv, 4);
  EXPECT_EQ(c.d_inner, 128);
  EXPECT_EQ(c.dt_rank, 4);
  EXPECT_FALSE(c.use_bias);
  EXPECT_TRUE(c.use_conv_bias);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_TRUE(c.residual_in_fp32);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.storage_dtype, DType::f32);
  EXPECT_DOUBLE_EQ(c.initializer_range, 0.1);
  EXPECT_FALSE(c.rescale_prenorm_residual);
  EXPECT_EQ(c.eos_token_id, 0);
  EXPECT_EQ(c.layer_kinds(), (std::vector<LayerKind>{LayerKind::mamba1, LayerKind::mamba1}));
}

TEST(ConfigTest, ReadsTheHuggingFaceMamba2Fixture) {
  SKIP_WITHOUT_FIXTURE("mamba2/config.json");
  ModelConfig c = load_config(test::fixture("mamba2"));
  EXPECT_EQ(c.model_type, "mamba2");
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.n_groups, 2);
  EXPECT_EQ(c.chunk_size, 16);
  EXPECT_EQ(c.d_inner, 128);
  EXPECT_EQ(c.time_step_limit_min, 0.0);
  EXPECT_TRUE(std::isinf(c.time_step_limit_max) && c.time_step_limit_max > 0);
  EXPECT_EQ(c.eos_token_id, 2);  // from generation_config.json
  EXPECT_EQ(c.pad_token_id, 1);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.layer_kinds(), (std::vector<LayerKind>{LayerKind::mamba2, LayerKind::mamba2}));
}

TEST(ConfigTest, ReadsTheStateSpacesFixture) {
  SKIP_WITHOUT_FIXTURE("mamba1_original/config.json");
  ModelConfig c = load_config(test::fixture("mamba1_original"));
  EXPECT_EQ(c.dialect, "state-spaces");
  EXPECT_EQ(c.model_type, "mamba");
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.vocab_size, 509);
  EXPECT_EQ(c.pad_vocab_size_multiple, 8);
  EXPECT_EQ(c.padded_vocab_size(), 512);
  EXPECT_EQ(c.dt_rank, 4);
  EXPECT_EQ(c.d_inner, 128);
  EXPECT_TRUE(c.rms_norm);
  EXPECT_TRUE(c.tie_embeddings);
}

TEST(ConfigTest, StateSpacesMamba2AndHybridKeys) {
  json j = {
      {"d_model", 128},           {"n_layer", 4},
      {"vocab_size", 50277},      {"ssm_cfg", {{"layer", "Mamba2"}, {"headdim", 32}, {"ngroups", 2}, {"d_state", 64}}},
      {"attn_layer_idx", {1, 3}}, {"attn_cfg", {{"num_heads", 4}}},
      {"d_intermediate", 256},    {"rms_norm", false}};
  ModelConfig c = parse_config(j, "ss.json");
  c.validate("ss.json");
  EXPECT_EQ(c.model_type, "mamba2");
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.padded_vocab_size(), 50280);
  EXPECT_FALSE(c.rms_norm);
  EXPECT_EQ(c.d_intermediate, 256);
  EXPECT_EQ(c.attn_cfg["num_heads"], 4);
  EXPECT_EQ(c.layer_kinds(),
            (std::vector<LayerKind>{LayerKind::mamba2, LayerKind::attention, LayerKind::mamba2, LayerKind::attention}));
  expect_error([&] { to_huggingface_json(c); }, {"hybrid"});
}

TEST(ConfigTest, LenientJsonAcceptsBareNonFiniteTokensOutsideStrings) {
  json j = parse_json_lenient(
      R"({"a": Infinity, "b": -Infinity, "c": NaN, "s": "Infinity, NaN \" -Infinity", "l": [1, NaN,Infinity]})",
      "x.json");
  EXPECT_TRUE(std::isinf(j["a"].get<double>()) && j["a"].get<double>() > 0);
  EXPECT_TRUE(std::isinf(j["b"].get<double>()) && j["b"].get<double>() < 0);
  EXPECT_TRUE(std::isnan(j["c"].get<double>()));
  EXPECT_EQ(j["s"], "Infinity, NaN \" -Infinity");
  EXPECT_TRUE(std::isnan(j["l"][1].get<double>()));
  EXPECT_TRUE(std::isinf(j["l"][2].get<double>()));
  // The {"__float__": ...} objects transformers writes resolve the same way.
  EXPECT_TRUE(std::isinf(parse_json_lenient(R"({"x": {"__float__": "Infinity"}})", "y")["x"].get<double>()));
  expect_error([] { parse_json_lenient(R"({"a": Infinityy})", "bad.json"); }, {"bad.json", "not valid JSON"});
  expect_error([] { parse_json_lenient(R"({"a": 1,)", "cut.json"); }, {"cut.json", "not valid JSON"});
  expect_error([] { parse_json_lenient(std::string(100000, '[') + std::string(100000, ']'), "deep.json"); },
               {"deep.json", "deeper than 1000"});
}

TEST(ConfigTest, TimeStepLimitInEveryInfinityForm) {
  for (const char* limit : {R"([0.001, {"__float__": "Infinity"}])", "[0.001, Infinity]", "[0.001, 1e400]"}) {
    SCOPED_TRACE(limit);
    std::string text = R"({"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 1, "vocab_size": 10,
                           "head_dim": 16, "num_heads": 8, "time_step_limit": )" +
                       std::string(limit) + "}";
    if (std::string(limit).find("1e400") != std::string::npos) {
      // A literal overflow is not JSON's business: the parser rejects it clearly.
      EXPECT_THROW(parse_config(parse_json_lenient(text, "c.json"), "c.json"), Error);
      continue;
    }
    ModelConfig c = parse_config(parse_json_lenient(text, "c.json"), "c.json");
    c.validate("c.json");
    EXPECT_DOUBLE_EQ(c.time_step_limit_min, 0.001);
    EXPECT_TRUE(std::isinf(c.time_step_limit_max));
  }
  // parse_config also understands the object form when given a json that was not resolved.
  json j = {{"model_type", "mamba2"},
            {"hidden_size", 64},
            {"num_hidden_layers", 1},
            {"vocab_size", 10},
            {"head_dim", 16},
            {"num_heads", 8},
            {"time_step_limit", {0.0, {{"__float__", "Infinity"}}}}};
  EXPECT_TRUE(std::isinf(parse_config(j, "obj").time_step_limit_max));
  j["time_step_limit"] = {0.0, {{"__float__", "Lots"}}};
  expect_error([&] { parse_config(j, "obj.json"); }, {"obj.json", "time_step_limit", "Lots"});
}

TEST(ConfigTest, TimeStepRankAutoAndDtypes) {
  json j = minimal_mamba();
  j["hidden_size"] = 100;
  j["time_step_rank"] = "auto";
  j["torch_dtype"] = "bfloat16";
  ModelConfig c = parse_config(j, "c");
  EXPECT_EQ(c.dt_rank, 7);  // ceil(100 / 16)
  EXPECT_EQ(c.d_inner, 200);
  EXPECT_EQ(c.storage_dtype, DType::bf16);
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  EXPECT_EQ(parse_config(j, "c").storage_dtype, DType::f16);
  j["dtype"] = "int8";
  expect_error([&] { parse_config(j, "q.json"); }, {"q.json", "'dtype'", "int8"});
  j.erase("dtype");
  j["time_step_rank"] = "big";
  expect_error([&] { parse_config(j, "r.json"); }, {"r.json", "time_step_rank", "auto"});
}

TEST(ConfigTest, UnknownModelTypeAndBadKeysAreClearErrors) {
  json j = minimal_mamba();
  j["model_type"] = "llama";
  expect_error([&] { parse_config(j, "m/config.json"); },
               {"m/config.json: model_type 'llama' is not supported (expected mamba or mamba2)"});
  expect_error([&] { parse_config(json{{"hello", 1}}, "h.json"); }, {"h.json", "model_type", "d_model"});
  expect_error([&] { parse_config(json::array(), "a.json"); }, {"a.json", "not a JSON object"});
  j = minimal_mamba();
  j["hidden_size"] = "wide";
  expect_error([&] { parse_config(j, "w.json"); }, {"w.json", "'hidden_size'", "integer"});
  j = minimal_mamba();
  j.erase("vocab_size");
  expect_error([&] { parse_config(j, "v.json"); }, {"v.json", "vocab_size"});
  j = minimal_mamba();
  j["use_bias"] = 1;
  expect_error([&] { parse_config(j, "b.json"); }, {"b.json", "use_bias"});
}

TEST(ConfigTest, ValidateNamesTheInconsistentKey) {
  json j = minimal_mamba();
  j["intermediate_size"] = 100;
  expect_error([&] { parse_config(j, "i.json").validate("i.json"); }, {"i.json", "intermediate_size", "96"});
  j = {{"model_type", "mamba2"}, {"hidden_size", 64}, {"num_hidden_layers", 1},
       {"vocab_size", 10},       {"head_dim", 16},    {"num_heads", 6}};
  expect_error([&] { parse_config(j, "h.json").validate("h.json"); }, {"h.json", "head_dim", "128"});
  j["num_heads"] = 8;
  j["n_groups"] = 3;
  expect_error([&] { parse_config(j, "g.json").validate("g.json"); }, {"g.json", "n_groups"});
  j = minimal_mamba();
  j["num_hidden_layers"] = 0;
  expect_error([&] { parse_config(j, "n.json").validate("n.json"); }, {"n.json", "n_layer"});
}

TEST(ConfigTest, HuggingFaceJsonRoundTripsAndStatesTheInitialisation) {
  SKIP_WITHOUT_FIXTURE("mamba2/config.json");
  for (const char* name : {"mamba1", "mamba2", "mamba1_original"}) {
    SCOPED_TRACE(name);
    ModelConfig c = load_config(test::fixture(name));
    json j = to_huggingface_json(c);
    for (const char* key : {"initializer_range", "rescale_prenorm_residual", "time_step_min", "time_step_max",
                            "time_step_floor", "time_step_scale", "time_step_init_scheme", "residual_in_fp32",
                            "tie_word_embeddings", "torch_dtype", "layer_norm_epsilon", "architectures"})
      EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_FALSE(j.contains("no_selection"));
    // transformers would apply the rescale to the weights it loads; our key keeps what was used.
    EXPECT_EQ(j["rescale_prenorm_residual"], false);
    EXPECT_EQ(j["mambacpp_rescaled_out_proj"], c.rescale_prenorm_residual);
    // Through text, as a file would go.
    ModelConfig back = parse_config(parse_json_lenient(j.dump(), "back"), "back");
    back.validate("back");
    EXPECT_EQ(back.model_type, c.model_type);
    EXPECT_EQ(back.d_model, c.d_model);
    EXPECT_EQ(back.n_layer, c.n_layer);
    EXPECT_EQ(back.vocab_size, c.padded_vocab_size());
    EXPECT_EQ(back.dt_rank, c.dt_rank);
    EXPECT_EQ(back.d_state, c.d_state);
    EXPECT_EQ(back.n_heads, c.n_heads);
    EXPECT_EQ(back.n_groups, c.n_groups);
    EXPECT_EQ(back.time_step_limit_max, c.time_step_limit_max);
    EXPECT_EQ(back.tie_embeddings, c.tie_embeddings);
    EXPECT_EQ(back.eos_token_id, c.eos_token_id);
    EXPECT_DOUBLE_EQ(back.initializer_range, c.initializer_range);
    EXPECT_EQ(back.rescale_prenorm_residual, c.rescale_prenorm_residual);
  }
  ModelConfig lti = parse_config(minimal_mamba(), "lti");
  lti.no_selection = true;
  EXPECT_EQ(to_huggingface_json(lti)["no_selection"], true);
  EXPECT_TRUE(parse_config(to_huggingface_json(lti), "lti").no_selection);
  ModelConfig v2 = load_config(test::fixture("mamba2"));
  EXPECT_EQ(to_huggingface_json(v2)["time_step_limit"][1], json({{"__float__", "Infinity"}}));
}

TEST(ConfigTest, LoadConfigErrorsNameTheFolder) {
  test::TempDir dir;
  expect_error([&] { load_config(dir.path().string()); }, {dir.path().string(), "no config.json"});
  test::write_bytes(dir.file("config.json"), R"({"model_type": "mamba", "hidden_size": 8,)");
  expect_error([&] { load_config(dir.path().string()); }, {dir.file("config.json"), "not valid JSON"});
  test::write_bytes(dir.file("config.json"), minimal_mamba().dump());
  test::write_bytes(dir.file("generation_config.json"), R"({"eos_token_id": [7, 9], "bos_token_id": 3})");
  ModelConfig c = load_config(dir.path().string());
  EXPECT_EQ(c.eos_token_id, 7);
  EXPECT_EQ(c.bos_token_id, 3);
  test::write_bytes(dir.file("generation_config.json"), R"({"eos_token_id": 5000})");
  expect_error([&] { load_config(dir.path().string()); }, {"config.json", "special token id 5000"});
}

}  // namespace
}  // namespace mamba::io

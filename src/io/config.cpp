#include "io/config.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/file_view.h"

namespace mamba::io {
namespace {

using nlohmann::json;

// transformers writes non-finite floats as {"__float__": "Infinity"}.
bool is_float_object(const json& v) {
  return v.is_object() && v.size() == 1 && v.contains("__float__") && v["__float__"].is_string();
}

double float_from_name(const std::string& name, const std::string& what) {
  if (name == "Infinity" || name == "inf") return INFINITY;
  if (name == "-Infinity" || name == "-inf") return -INFINITY;
  if (name == "NaN" || name == "nan") return NAN;
  fail(what, ": {\"__float__\": \"", name, "\"} is not Infinity, -Infinity or NaN");
}

// Replaces every {"__float__": name} object by the number it stands for.
void resolve_float_objects(json& v, const std::string& source) {
  if (is_float_object(v)) {
    v = float_from_name(v["__float__"].get<std::string>(), source);
    return;
  }
  if (v.is_structured())
    for (json& child : v) resolve_float_objects(child, source);
}

// Typed access to optional keys; a present key of the wrong type is an error naming it.
class Keys {
 public:
  Keys(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  const json& at(const char* key) const { return j_[key]; }
  std::string what(const char* key) const { return source_ + ": key '" + key + "'"; }

  int64_t integer(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    MAMBA_CHECK(v.is_number_integer(), what(key), " must be an integer, got ", v.dump());
    return v.get<int64_t>();
  }
  int64_t required_integer(const char* key) const {
    MAMBA_CHECK(has(key), source_, ": missing key '", key, "'");
    return integer(key, 0);
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    return number_value(j_[key], what(key));
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    MAMBA_CHECK(j_[key].is_boolean(), what(key), " must be true or false, got ", j_[key].dump());
    return j_[key].get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    MAMBA_CHECK(j_[key].is_string(), what(key), " must be a string, got ", j_[key].dump());
    return j_[key].get<std::string>();
  }
  // A token id: an integer, or a list whose first entry is used (generation_config allows lists).
  int64_t token(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (v.is_array()) {
      if (v.empty()) return fallback;
      MAMBA_CHECK(v[0].is_number_integer(), what(key), " must hold integers, got ", v.dump());
      return v[0].get<int64_t>();
    }
    return integer(key, fallback);
  }

  static double number_value(const json& v, const std::string& what) {
    if (is_float_object(v)) return float_from_name(v["__float__"].get<std::string>(), what);
    MAMBA_CHECK(v.is_number(), what, " must be a number, got ", v.dump());
    return v.get<double>();
  }

 private:
  const json& j_;
  std::string source_;
};

DType storage_dtype_from(const std::string& name, const std::string& what) {
  if (name == "float32" || name == "float") return DType::f32;
  if (name == "bfloat16") return DType::bf16;
  if (name == "float16" || name == "half") return DType::f16;
  if (name == "float64" || name == "double") return DType::f64;
  fail(what, ": dtype '", name, "' is not supported (expected float32, bfloat16, float16 or float64)");
}

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "float32";
    case DType::bf16:
      return "bfloat16";
    case DType::f16:
      return "float16";
    case DType::f64:
      return "float64";
    default:
      fail("config: storage dtype ", dtype_name(t), " has no torch_dtype name");
  }
}

int64_t dt_rank_from(const Keys& k, const char* key, int64_t d_model) {
  if (k.has(key) && k.at(key).is_string()) {
    MAMBA_CHECK(k.at(key).get<std::string>() == "auto", k.what(key), " must be an integer or \"auto\", got ",
                k.at(key).dump());
    return (d_model + 15) / 16;
  }
  return k.integer(key, (d_model + 15) / 16);
}

void read_special_tokens(const Keys& k, ModelConfig& c) {
  c.eos_token_id = k.token("eos_token_id", c.eos_token_id);
  c.bos_token_id = k.token("bos_token_id", c.bos_token_id);
  c.pad_token_id = k.token("pad_token_id", c.pad_token_id);
}

void read_huggingface(const Keys& k, ModelConfig& c) {
  bool v2 = c.model_type == "mamba2";
  c.d_model = k.required_integer("hidden_size");
  c.n_layer = k.required_integer("num_hidden_layers");
  c.vocab_size = k.required_integer("vocab_size");
  c.pad_vocab_size_multiple = 1;
  c.d_state = k.integer("state_size", v2 ? 128 : 16);
  c.d_conv = k.integer("conv_kernel", 4);
  c.expand = k.integer("expand", 2);
  c.d_inner = k.integer("intermediate_size", c.expand * c.d_model);
  c.dt_rank = dt_rank_from(k, "time_step_rank", c.d_model);
  c.use_bias = k.boolean("use_bias", false);
  c.use_conv_bias = k.boolean("use_conv_bias", true);
  c.rms_norm = true;  // transformers' Mamba blocks always use RMSNorm (mamba2's rms_norm is the gated norm's)
  c.residual_in_fp32 = k.boolean("residual_in_fp32", true);
  c.tie_embeddings = k.boolean("tie_word_embeddings", !v2);  // the two config classes' defaults differ
  c.norm_eps = k.number("layer_norm_epsilon", 1e-5);
  std::string activation = k.string("hidden_act", "silu");
  MAMBA_CHECK(activation == "silu", k.what("hidden_act"), " is '", activation, "'; Mamba uses silu");
  for (const char* key : {"dtype", "torch_dtype"})
    if (k.has(key)) c.storage_dtype = storage_dtype_from(k.string(key, ""), k.what(key));

  c.initializer_range = k.number("initializer_range", 0.1);
  c.rescale_prenorm_residual = k.boolean("mambacpp_rescaled_out_proj", k.boolean("rescale_prenorm_residual", false));
  c.time_step_min = k.number("time_step_min", 0.001);
  c.time_step_max = k.number("time_step_max", 0.1);
  c.time_step_floor = k.number("time_step_floor", 1e-4);
  c.time_step_scale = k.number("time_step_scale", 1.0);
  c.time_step_init_scheme = k.string("time_step_init_scheme", "random");
  c.no_selection = k.boolean("no_selection", false);
  read_special_tokens(k, c);

  if (v2) {
    c.head_dim = k.integer("head_dim", 64);
    c.n_heads = k.integer("num_heads", c.head_dim > 0 ? c.d_inner / c.head_dim : 0);
    c.n_groups = k.integer("n_groups", 1);
    c.chunk_size = k.integer("chunk_size", 256);
    if (k.has("time_step_limit")) {
      const json& limit = k.at("time_step_limit");
      MAMBA_CHECK(limit.is_array() && limit.size() == 2, k.what("time_step_limit"), " must be [min, max], got ",
                  limit.dump());
      c.time_step_limit_min = Keys::number_value(limit[0], k.what("time_step_limit"));
      c.time_step_limit_max = Keys::number_value(limit[1], k.what("time_step_limit"));
    }
  }
}

void read_state_spaces(const Keys& k, const std::string& source, ModelConfig& c) {
  c.dialect = "state-spaces";
  c.d_model = k.required_integer("d_model");
  c.n_layer = k.required_integer("n_layer");
  c.vocab_size = k.required_integer("vocab_size");
  c.pad_vocab_size_multiple = k.integer("pad_vocab_size_multiple", 8);
  c.rms_norm = k.boolean("rms_norm", true);
  c.residual_in_fp32 = k.boolean("residual_in_fp32", true);
  c.tie_embeddings = k.boolean("tie_embeddings", true);
  c.norm_eps = k.number("norm_epsilon", 1e-5);
  c.d_intermediate = k.integer("d_intermediate", 0);
  if (k.has("attn_layer_idx")) {
    const json& layers = k.at("attn_layer_idx");
    MAMBA_CHECK(layers.is_array(), k.what("attn_layer_idx"), " must be a list of layer indices");
    for (const json& i : layers) {
      MAMBA_CHECK(i.is_number_integer(), k.what("attn_layer_idx"), " must hold integers, got ", i.dump());
      c.attn_layer_idx.push_back(i.get<int64_t>());
    }
  }
  if (k.has("attn_cfg")) c.attn_cfg = k.at("attn_cfg");

  json ssm = k.has("ssm_cfg") ? k.at("ssm_cfg") : json::object();
  MAMBA_CHECK(ssm.is_object(), k.what("ssm_cfg"), " must be an object");
  Keys s(ssm, source + ": ssm_cfg");
  std::string layer = s.string("layer", "Mamba1");
  MAMBA_CHECK(layer == "Mamba1" || layer == "Mamba2", s.what("layer"), " is '", layer, "' (expected Mamba1 or Mamba2)");
  bool v2 = layer == "Mamba2";
  c.model_type = v2 ? "mamba2" : "mamba";
  c.d_state = s.integer("d_state", v2 ? 128 : 16);
  c.d_conv = s.integer("d_conv", 4);
  c.expand = s.integer("expand", 2);
  c.d_inner = c.expand * c.d_model;
  c.dt_rank = dt_rank_from(s, "dt_rank", c.d_model);
  c.use_bias = s.boolean("bias", false);
  c.use_conv_bias = s.boolean("conv_bias", true);
  c.time_step_min = s.number("dt_min", c.time_step_min);
  c.time_step_max = s.number("dt_max", c.time_step_max);
  c.time_step_floor = s.number("dt_init_floor", c.time_step_floor);
  c.time_step_scale = s.number("dt_scale", c.time_step_scale);
  if (v2) {
    c.head_dim = s.integer("headdim", 64);
    c.n_heads = c.head_dim > 0 ? c.d_inner / c.head_dim : 0;
    c.n_groups = s.integer("ngroups", 1);
    c.chunk_size = s.integer("chunk_size", 256);
    if (s.has("dt_limit")) {
      const json& limit = s.at("dt_limit");
      MAMBA_CHECK(limit.is_array() && limit.size() == 2, s.what("dt_limit"), " must be [min, max]");
      c.time_step_limit_min = Keys::number_value(limit[0], s.what("dt_limit"));
      c.time_step_limit_max = Keys::number_value(limit[1], s.what("dt_limit"));
    }
  }
}

}  // namespace

int64_t ModelConfig::padded_vocab_size() const {
  int64_t multiple = std::max<int64_t>(pad_vocab_size_multiple, 1);
  return (vocab_size + multiple - 1) / multiple * multiple;
}

std::vector<LayerKind> ModelConfig::layer_kinds() const {
  std::vector<LayerKind> kinds(size_t(std::max<int64_t>(n_layer, 0)),
                               model_type == "mamba2" ? LayerKind::mamba2 : LayerKind::mamba1);
  for (int64_t i : attn_layer_idx)
    if (i >= 0 && i < n_layer) kinds[size_t(i)] = LayerKind::attention;
  return kinds;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* key) {
    MAMBA_CHECK(v > 0, source, ": ", key, " must be positive, got ", v);
  };
  MAMBA_CHECK(model_type == "mamba" || model_type == "mamba2", source, ": model_type '", model_type,
              "' is not supported (expected mamba or mamba2)");
  positive(d_model, "d_model (hidden_size)");
  positive(n_layer, "n_layer (num_hidden_layers)");
  positive(vocab_size, "vocab_size");
  positive(pad_vocab_size_multiple, "pad_vocab_size_multiple");
  positive(d_state, "d_state (state_size)");
  positive(d_conv, "d_conv (conv_kernel)");
  positive(expand, "expand");
  MAMBA_CHECK(d_inner == expand * d_model, source, ": d_inner (intermediate_size) ", d_inner,
              " must equal expand × d_model = ", expand * d_model);
  MAMBA_CHECK(norm_eps > 0 && std::isfinite(norm_eps), source, ": layer_norm_epsilon must be a positive number, got ",
              norm_eps);
  if (model_type == "mamba") positive(dt_rank, "dt_rank (time_step_rank)");
  if (model_type == "mamba2") {
    positive(head_dim, "head_dim");
    positive(n_heads, "n_heads (num_heads)");
    positive(n_groups, "n_groups");
    positive(chunk_size, "chunk_size");
    MAMBA_CHECK(n_heads * head_dim == d_inner, source, ": num_heads × head_dim = ", n_heads * head_dim,
                " must equal d_inner = expand × d_model = ", d_inner);
    MAMBA_CHECK(n_heads % n_groups == 0, source, ": num_heads ", n_heads, " must be a multiple of n_groups ", n_groups);
    MAMBA_CHECK(!std::isnan(time_step_limit_min) && !std::isnan(time_step_limit_max) &&
                    time_step_limit_min <= time_step_limit_max,
                source, ": time_step_limit [", time_step_limit_min, ", ", time_step_limit_max, "] is not a range");
  }
  MAMBA_CHECK(no_selection == false || model_type == "mamba", source, ": no_selection applies to Mamba-1 only");
  MAMBA_CHECK(d_intermediate >= 0, source, ": d_intermediate must not be negative, got ", d_intermediate);
  for (int64_t i : attn_layer_idx)
    MAMBA_CHECK(i >= 0 && i < n_layer, source, ": attn_layer_idx ", i, " is not a layer (n_layer ", n_layer, ")");
  for (int64_t id : {eos_token_id, bos_token_id, pad_token_id})
    MAMBA_CHECK(id >= -1 && id < padded_vocab_size(), source, ": special token id ", id, " is outside the vocabulary (",
                padded_vocab_size(), " rows)");
}

json parse_json_lenient(const std::string& text, const std::string& source) {
  // Bare Infinity/-Infinity/NaN (outside strings) become {"__float__": ...}, which the parser
  // accepts, and are then resolved to numbers with every other such object.
  std::string rewritten;
  rewritten.reserve(text.size());
  bool in_string = false;
  int depth = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (in_string) {
      rewritten += ch;
      if (ch == '\\' && i + 1 < text.size()) {
        rewritten += text[++i];
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') in_string = true;
    if (ch == '[' || ch == '{') {
      // resolve_float_objects recurses; no config nests anywhere near this deep.
      MAMBA_CHECK(++depth <= 1000, source, ": JSON nests deeper than 1000 levels");
    }
    if (ch == ']' || ch == '}') --depth;
    bool word_start = i == 0 || !(std::isalnum(static_cast<unsigned char>(text[i - 1])) || text[i - 1] == '_');
    bool replaced = false;
    for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
      size_t length = std::strlen(token);
      bool word_end = i + length >= text.size() || !std::isalnum(static_cast<unsigned char>(text[i + length]));
      if (word_start && word_end && text.compare(i, length, token) == 0) {
        rewritten += std::string("{\"__float__\":\"") + token + "\"}";
        i += length - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) rewritten += ch;
  }
  json j;
  try {
    j = json::parse(rewritten);
  } catch (const json::exception& e) {
    fail(source, ": not valid JSON (", e.what(), ")");
  }
  resolve_float_objects(j, source);
  return j;
}

ModelConfig parse_config(const json& j, const std::string& source) {
  MAMBA_CHECK(j.is_object(), source, ": config is not a JSON object");
  ModelConfig c;
  Keys k(j, source);
  if (k.has("model_type")) {
    c.model_type = k.string("model_type", "");
    MAMBA_CHECK(c.model_type == "mamba" || c.model_type == "mamba2", source, ": model_type '", c.model_type,
                "' is not supported (expected mamba or mamba2)");
    read_huggingface(k, c);
  } else {
    MAMBA_CHECK(k.has("d_model") && k.has("n_layer"), source,
                ": neither a Hugging Face config (no model_type) nor a state-spaces config (no d_model/n_layer)");
    read_state_spaces(k, source, c);
  }
  return c;
}

ModelConfig load_config(const std::string& dir) {
  std::filesystem::path config_path = std::filesystem::path(dir) / "config.json";
  MAMBA_CHECK(std::filesystem::is_regular_file(config_path), dir,
              ": no config.json (expected a Hugging Face or state-spaces model folder)");
  ModelConfig c = parse_config(parse_json_lenient(read_text_file(config_path), config_path), config_path);
  std::filesystem::path generation_path = std::filesystem::path(dir) / "generation_config.json";
  if (std::filesystem::is_regular_file(generation_path)) {
    json generation = parse_json_lenient(read_text_file(generation_path), generation_path);
    MAMBA_CHECK(generation.is_object(), generation_path.string(), ": not a JSON object");
    read_special_tokens(Keys(generation, generation_path), c);
  }
  c.validate(config_path);
  return c;
}

json to_huggingface_json(const ModelConfig& c) {
  MAMBA_CHECK(c.attn_layer_idx.empty() && c.d_intermediate == 0, "config: a hybrid model (attention layers or MLPs) ",
              "has no Hugging Face mamba/mamba2 config");
  bool v2 = c.model_type == "mamba2";
  json j = {
      {"architectures", {v2 ? "Mamba2ForCausalLM" : "MambaForCausalLM"}},
      {"model_type", c.model_type},
      {"hidden_size", c.d_model},
      {"num_hidden_layers", c.n_layer},
      {"vocab_size", c.padded_vocab_size()},  // transformers has no padding: the embedding's rows
      {"state_size", c.d_state},
      {"conv_kernel", c.d_conv},
      {"expand", c.expand},
      {"intermediate_size", c.d_inner},
      {"time_step_rank", c.dt_rank},
      {"use_bias", c.use_bias},
      {"use_conv_bias", c.use_conv_bias},
      {"hidden_act", "silu"},
      {"layer_norm_epsilon", c.norm_eps},
      {"residual_in_fp32", c.residual_in_fp32},
      {"tie_word_embeddings", c.tie_embeddings},
      {"torch_dtype", torch_dtype_name(c.storage_dtype)},
      {"initializer_range", c.initializer_range},
      // transformers (5.17) applies this initialisation flag to the weights it loads, dividing a
      // trained out_proj by √n_layer: the file says false, and our own key records what was used.
      {"rescale_prenorm_residual", false},
      {"mambacpp_rescaled_out_proj", c.rescale_prenorm_residual},
      {"time_step_min", c.time_step_min},
      {"time_step_max", c.time_step_max},
      {"time_step_floor", c.time_step_floor},
      {"time_step_scale", c.time_step_scale},
      {"time_step_init_scheme", c.time_step_init_scheme},
      {"use_cache", true},
  };
  if (v2) {
    j["num_heads"] = c.n_heads;
    j["head_dim"] = c.head_dim;
    j["n_groups"] = c.n_groups;
    j["chunk_size"] = c.chunk_size;
    j["rms_norm"] = true;
    auto finite_or_named = [](double v) -> json {
      if (std::isnan(v)) return {{"__float__", "NaN"}};
      if (std::isinf(v)) return {{"__float__", v > 0 ? "Infinity" : "-Infinity"}};
      return v;
    };
    j["time_step_limit"] = {finite_or_named(c.time_step_limit_min), finite_or_named(c.time_step_limit_max)};
  }
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  if (c.no_selection) j["no_selection"] = true;
  return j;
}

}  // namespace mamba::io

// The model configuration, read from the dialects people have (Hugging Face `mamba`/`mamba2`
// config.json, original state-spaces config.json) and written back as Hugging Face config.json.
//
// One struct describes every model family the program knows (Mamba-1, Mamba-2, attention and
// MLP/MoE layers in hybrids); the model layer refuses what it cannot run yet with a clear error.
#pragma once
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace mamba::io {

enum class LayerKind { mamba1, mamba2, attention };

struct ModelConfig {
  std::string model_type = "mamba";     // "mamba" (Mamba-1) | "mamba2"
  std::string dialect = "huggingface";  // "huggingface" | "state-spaces": where it was read from
  int64_t d_model = 0;
  int64_t n_layer = 0;
  int64_t vocab_size = 0;               // tokens that exist: generation samples only ids below it
  int64_t pad_vocab_size_multiple = 1;  // embedding rows = vocab_size rounded up to this (state-spaces)
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t d_inner = 0;  // expand · d_model
  int64_t dt_rank = 0;  // ceil(d_model / 16) when "auto"
  bool use_bias = false;
  bool use_conv_bias = true;
  bool rms_norm = true;  // false: LayerNorm
  bool residual_in_fp32 = true;
  bool tie_embeddings = true;
  double norm_eps = 1e-5;
  DType storage_dtype = DType::f32;  // torch_dtype of the checkpoint

  // Mamba-2 (SSD)
  int64_t n_heads = 0;
  int64_t head_dim = 64;
  int64_t n_groups = 1;
  int64_t chunk_size = 256;
  double time_step_limit_min = 0.0;
  double time_step_limit_max = INFINITY;  // JSON accepts Infinity and {"__float__": "Infinity"}

  // Hybrids: attention layer indices and an MLP after each mixer when d_intermediate > 0.
  std::vector<int64_t> attn_layer_idx;
  int64_t d_intermediate = 0;
  nlohmann::json attn_cfg;  // kept as given until attention layers exist

  // Special tokens (generation_config.json overrides config.json); −1 when absent.
  int64_t eos_token_id = -1;
  int64_t bos_token_id = -1;
  int64_t pad_token_id = -1;

  // Initialisation for training from scratch (written back so a config states what was used).
  double initializer_range = 0.02;
  bool rescale_prenorm_residual = true;
  double time_step_min = 0.001;
  double time_step_max = 0.1;
  double time_step_floor = 1e-4;
  double time_step_scale = 1.0;
  std::string time_step_init_scheme = "random";

  // Our own extension: the LTI ablation (selection off). Such checkpoints are ours only.
  bool no_selection = false;

  int64_t padded_vocab_size() const;  // rows of the embedding
  std::vector<LayerKind> layer_kinds() const;
  // Consistency checks (positive sizes, d_inner = expand·d_model, heads·head_dim = d_inner, ...);
  // messages name `source` (the config file) and the key.
  void validate(const std::string& source) const;
};

// Reads DIR/config.json (any dialect) and, when present, DIR/generation_config.json.
ModelConfig load_config(const std::string& dir);
// Parses one config.json document; `source` names it in errors. Absent keys take the defaults of
// the dialect's own config class (transformers' MambaConfig / Mamba2Config, mamba_ssm's
// MambaConfig). Does not validate().
ModelConfig parse_config(const nlohmann::json& j, const std::string& source);
// Hugging Face config.json for this model (model_type mamba or mamba2), loadable by transformers.
nlohmann::json to_huggingface_json(const ModelConfig& c);
// Parses JSON text that may contain the bare tokens Infinity, -Infinity and NaN (as some configs do).
nlohmann::json parse_json_lenient(const std::string& text, const std::string& source);

}  // namespace mamba::io

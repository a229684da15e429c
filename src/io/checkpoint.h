// Reading and writing checkpoints: a folder with config.json and weights in one of
//   model.safetensors | model.safetensors.index.json + shards | pytorch_model.bin (state-spaces).
// Tensors are returned by their Hugging Face names (state-spaces' `backbone.embedding.weight`
// becomes `backbone.embeddings.weight`; a stored `lm_head.weight` that shares the embedding's
// storage, or equals it while the config says tied, is dropped as tied). safetensors files are
// memory-mapped: tensors keep the stored dtype and are views of the mapping (copied only when a
// writer left them misaligned for their element size).
#pragma once
#include <map>
#include <string>

#include "core/tensor.h"
#include "io/config.h"

namespace mamba::io {

using TensorMap = std::map<std::string, Tensor>;

struct Checkpoint {
  ModelConfig config;
  TensorMap tensors;
  std::string weights_path;  // the file (or index) the tensors came from, for messages
};

// Loads config and every tensor. Errors name the folder/file/tensor and what was expected.
Checkpoint load_checkpoint(const std::string& dir);

// Writes DIR/config.json and DIR/model.safetensors atomically (temp files, fsync, rename); the
// folder is created when missing. `metadata` goes into the safetensors header's __metadata__,
// with "format": "pt" added (transformers refuses files without it).
void save_checkpoint(const std::string& dir, const ModelConfig& config, const TensorMap& tensors,
                     const std::map<std::string, std::string>& metadata = {});

}  // namespace mamba::io

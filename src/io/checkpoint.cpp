#include "io/checkpoint.h"

#include <cstring>
#include <filesystem>

#include "io/file_view.h"
#include "io/safetensors.h"
#include "io/torch_pickle.h"

namespace mamba::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kEmbedding = "backbone.embeddings.weight";
constexpr const char* kStateSpacesEmbedding = "backbone.embedding.weight";
constexpr const char* kLmHead = "lm_head.weight";

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.device() == Device::cpu && b.device() == Device::cpu &&
         (a.raw() == b.raw() || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// model.safetensors.index.json: {"weight_map": {tensor name: shard file name}}.
TensorMap read_sharded(const fs::path& index_path) {
  json index = parse_json_lenient(read_text_file(index_path), index_path);
  MAMBA_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), index_path.string(),
              ": no \"weight_map\" object");
  std::map<std::string, std::vector<std::string>> names_by_shard;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    MAMBA_CHECK(shard.is_string(), index_path.string(), ": shard of tensor ", name, " is not a file name");
    std::string file = shard.get<std::string>();
    MAMBA_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..",
                index_path.string(), ": shard '", file, "' of tensor ", name, " is not a file name in the same folder");
    names_by_shard[file].push_back(name);
  }
  TensorMap tensors;
  for (const auto& [file, names] : names_by_shard) {
    fs::path shard_path = index_path.parent_path() / file;
    MAMBA_CHECK(fs::is_regular_file(shard_path), index_path.string(), ": shard ", shard_path.string(),
                " does not exist");
    SafetensorsFile shard = read_safetensors(shard_path);
    for (const std::string& name : names) {
      auto it = shard.tensors.find(name);
      MAMBA_CHECK(it != shard.tensors.end(), shard_path.string(), ": tensor ", name, " is listed in ",
                  index_path.filename().string(), " but not in this shard");
      tensors[name] = it->second;
    }
  }
  return tensors;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& dir) {
  MAMBA_CHECK(fs::exists(dir), dir, ": no such folder (expected a model folder with config.json and weights)");
  MAMBA_CHECK(fs::is_directory(dir), dir, ": not a folder (expected a model folder with config.json and weights)");
  Checkpoint checkpoint;
  checkpoint.config = load_config(dir);
  ModelConfig& config = checkpoint.config;

  fs::path single = fs::path(dir) / "model.safetensors";
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  fs::path torch_file = fs::path(dir) / "pytorch_model.bin";
  std::map<std::string, std::string> storage_of;
  if (fs::exists(single)) {
    checkpoint.weights_path = single;
    checkpoint.tensors = read_safetensors(single).tensors;
  } else if (fs::exists(index)) {
    checkpoint.weights_path = index;
    checkpoint.tensors = read_sharded(index);
  } else if (fs::exists(torch_file)) {
    checkpoint.weights_path = torch_file;
    TorchStateDict state = read_torch_state_dict(torch_file);
    checkpoint.tensors = std::move(state.tensors);
    storage_of = std::move(state.storage_of);
  } else {
    fail(dir, ": no weights (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin)");
  }
  TensorMap& tensors = checkpoint.tensors;

  // state-spaces names its embedding in the singular.
  if (auto it = tensors.find(kStateSpacesEmbedding); it != tensors.end()) {
    MAMBA_CHECK(!tensors.contains(kEmbedding), checkpoint.weights_path, ": holds both ", kStateSpacesEmbedding, " and ",
                kEmbedding);
    tensors[kEmbedding] = it->second;
    tensors.erase(it);
    if (storage_of.contains(kStateSpacesEmbedding)) storage_of[kEmbedding] = storage_of[kStateSpacesEmbedding];
  }
  // A stored LM head that is the embedding is the tie, not a second matrix.
  auto head = tensors.find(kLmHead);
  auto embedding = tensors.find(kEmbedding);
  if (head != tensors.end() && embedding != tensors.end()) {
    bool shares_storage = storage_of.contains(kLmHead) && storage_of.contains(kEmbedding) &&
                          storage_of[kLmHead] == storage_of[kEmbedding] &&
                          head->second.raw() == embedding->second.raw() &&
                          head->second.shape() == embedding->second.shape();
    if (shares_storage || (config.tie_embeddings && same_bytes(head->second, embedding->second))) {
      tensors.erase(head);
      config.tie_embeddings = true;
    }
  }
  // state-spaces configs do not state the dtype; the weights do.
  if (config.dialect == "state-spaces" && tensors.contains(kEmbedding))
    config.storage_dtype = tensors[kEmbedding].dtype();
  return checkpoint;
}

void save_checkpoint(const std::string& dir, const ModelConfig& config, const TensorMap& tensors,
                     const std::map<std::string, std::string>& metadata) {
  std::error_code error;
  fs::create_directories(dir, error);
  MAMBA_CHECK(!error && fs::is_directory(dir), dir, ": cannot create the checkpoint folder (", error.message(), ")");
  std::string config_text = to_huggingface_json(config).dump(2) + "\n";  // fails before anything is written
  std::map<std::string, std::string> header_metadata = metadata;
  header_metadata.emplace("format", "pt");  // transformers refuses safetensors files without it
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, header_metadata);
  write_file_atomic((fs::path(dir) / "config.json").string(), config_text);
}

}  // namespace mamba::io

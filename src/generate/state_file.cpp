#include "generate/state_file.h"

#include "io/safetensors.h"

namespace mamba::generate {

namespace {
std::map<std::string, std::string> shape_metadata(const model::LanguageModel& model) {
  const io::ModelConfig& c = model.config();
  return {{"format", "mambacpp-state-1"},
          {"n_layer", std::to_string(c.n_layer)},
          {"d_inner", std::to_string(c.d_inner)},
          {"d_state", std::to_string(c.d_state)},
          {"d_conv", std::to_string(c.d_conv)}};
}
}  // namespace

void save_state(const std::string& path, const model::LanguageModel& model, const model::InferenceState& state) {
  std::map<std::string, Tensor> tensors;
  for (size_t i = 0; i < state.conv.size(); ++i) {
    tensors["conv." + std::to_string(i)] = state.conv[i];
    tensors["ssm." + std::to_string(i)] = state.ssm[i];
  }
  io::write_safetensors(path, tensors, shape_metadata(model));
}

model::InferenceState load_state(const std::string& path, const model::LanguageModel& model) {
  io::SafetensorsFile file = io::read_safetensors(path);
  for (auto& [key, value] : shape_metadata(model)) {
    auto it = file.metadata.find(key);
    MAMBA_CHECK(it != file.metadata.end() && it->second == value, path, ": state file ",
                it == file.metadata.end() ? "lacks '" + key + "'" : key + " = " + it->second, ", expected ", key, " = ",
                value, " for this model");
  }
  auto conv0 = file.tensors.find("conv.0");
  MAMBA_CHECK(conv0 != file.tensors.end() && conv0->second.ndim() == 3, path,
              ": missing tensor conv.0 [batch, D, K-1]");
  model::InferenceState state = model.new_state(conv0->second.size(0));
  for (size_t i = 0; i < state.conv.size(); ++i) {
    for (auto [name, target] : {std::pair{"conv." + std::to_string(i), &state.conv[i]},
                                std::pair{"ssm." + std::to_string(i), &state.ssm[i]}}) {
      auto it = file.tensors.find(name);
      MAMBA_CHECK(it != file.tensors.end(), path, ": missing tensor ", name);
      MAMBA_CHECK(it->second.shape() == target->shape() && it->second.dtype() == DType::f32, path, ": tensor ", name,
                  " is ", dtype_name(it->second.dtype()), " ", shape_string(it->second.shape()), ", expected f32 ",
                  shape_string(target->shape()));
      target->copy_from(it->second);
    }
  }
  return state;
}

}  // namespace mamba::generate

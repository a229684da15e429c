// Saving and restoring the recurrent state of a batch of sequences, so a long context is
// consumed once and continued later. The file is safetensors: `conv.<layer>` [batch, D, K−1] and
// `ssm.<layer>` [batch, D, N] in float32, with the model shape in the metadata for checking.
#pragma once
#include <string>

#include "model/language_model.h"

namespace mamba::generate {

void save_state(const std::string& path, const model::LanguageModel& model, const model::InferenceState& state);
// Errors name the file and what does not match the model.
model::InferenceState load_state(const std::string& path, const model::LanguageModel& model);

}  // namespace mamba::generate

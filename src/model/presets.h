// Configurations of the published Mamba-1 shapes (state-spaces/mamba-{130m,...,2.8b}: GPT-NeoX
// vocabulary 50280 rows) and a tiny one for quick training runs, by name.
#pragma once
#include <string>

#include "io/config.h"

namespace mamba::model {

// "tiny" | "130m" | "370m" | "790m" | "1.4b" | "2.8b"; `what` names the flag in the error.
io::ModelConfig preset_config(const std::string& name, const std::string& what);

}  // namespace mamba::model

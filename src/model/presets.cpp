#include "model/presets.h"

#include "core/error.h"

namespace mamba::model {

io::ModelConfig preset_config(const std::string& name, const std::string& what) {
  struct Shape {
    const char* name;
    int64_t d_model, n_layer, vocab;
  };
  static const Shape shapes[] = {{"tiny", 128, 4, 256},     {"130m", 768, 24, 50280},  {"370m", 1024, 48, 50280},
                                 {"790m", 1536, 48, 50280}, {"1.4b", 2048, 48, 50280}, {"2.8b", 2560, 64, 50280}};
  for (const Shape& s : shapes) {
    if (name != s.name) continue;
    io::ModelConfig c;
    c.d_model = s.d_model;
    c.n_layer = s.n_layer;
    c.vocab_size = s.vocab;
    c.d_inner = c.expand * c.d_model;
    c.dt_rank = (c.d_model + 15) / 16;
    c.eos_token_id = s.vocab == 256 ? -1 : 0;
    return c;
  }
  fail(what, ": unknown shape '", name, "' (expected tiny, 130m, 370m, 790m, 1.4b or 2.8b)");
}

}  // namespace mamba::model

// Batched generation: prefill every prompt (right-padded, with per-sequence lengths, in chunks
// that carry the recurrent state), then one recurrence step per new token. Memory and time per
// token do not depend on how long the context is.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "generate/sampler.h"
#include "model/language_model.h"

namespace mamba::generate {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  int64_t eos_token_id = -1;  // −1: none
  bool ignore_eos = false;
  int64_t prefill_chunk = 2048;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  int64_t decode_tokens = 0;  // new tokens that took a recurrence step (the first comes from prefill)
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Called for each new token of sequence `index` as soon as it is chosen (EOS is not reported).
using TokenCallback = std::function<void(int64_t index, int32_t token)>;

// Returns the new tokens of each prompt (EOS excluded). Sequence i draws from its own generator
// seeded by (seed, i), so results do not depend on the thread count or on the batch's other prompts.
// With `state`, the prompts continue the sequences it holds (one per prompt), and it is left
// holding the state after the last token (the last new one included).
std::vector<std::vector<int32_t>> generate(model::LanguageModel& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options, const TokenCallback& on_token = {},
                                           GenerateStats* stats = nullptr, model::InferenceState* state = nullptr);

// Checks that every id is inside the model's vocabulary; the message names the prompt and position.
void check_token_ids(const std::vector<int32_t>& ids, int64_t vocab_rows, const char* what);

}  // namespace mamba::generate

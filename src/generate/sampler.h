// Choosing the next token from a row of logits.
//
// Applied in this order: repetition penalty (a logit of a token already in the context is
// divided by r when positive, multiplied by r when negative), temperature (logits / T; T = 0 is
// greedy argmax), top-k (keep the k largest), top-p (keep the smallest set of most likely tokens
// whose probability reaches p), min-p (drop tokens less likely than min_p × the most likely),
// then one draw from the renormalised distribution. Only ids below `vocab_size` are candidates,
// so padding rows of the embedding are never produced.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace mamba::generate {

struct SamplingParams {
  double temperature = 1.0;
  int64_t top_k = 0;            // 0: off
  double top_p = 1.0;           // 1: off
  double min_p = 0.0;           // 0: off
  double repeat_penalty = 1.0;  // 1: off
  uint64_t seed = 0;

  // Throws naming the flag (--temperature, --top-k, ...) when a value is negative, NaN or out of range.
  void validate() const;
};

// Picks a token from logits[0, vocab_size) given the ids seen so far (prompt and output).
int32_t sample_token(const float* logits, int64_t vocab_size, const std::vector<int32_t>& context,
                     const SamplingParams& params, Rng& rng);

}  // namespace mamba::generate

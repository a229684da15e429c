#include "generate/generator.h"

#include <algorithm>

#include "core/timer.h"
#include "ops/argmax.h"

namespace mamba::generate {

void check_token_ids(const std::vector<int32_t>& ids, int64_t vocab_rows, const char* what) {
  for (size_t i = 0; i < ids.size(); ++i)
    MAMBA_CHECK(ids[i] >= 0 && ids[i] < vocab_rows, what, ": token id ", ids[i], " at position ", i,
                " is outside the model's vocabulary [0, ", vocab_rows, ")");
}

std::vector<std::vector<int32_t>> generate(model::LanguageModel& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options, const TokenCallback& on_token,
                                           GenerateStats* stats, model::InferenceState* state) {
  MAMBA_CHECK(!prompts.empty(), "generate: no prompts");
  MAMBA_CHECK(options.max_new_tokens >= 0, "-n: expected a token count ≥ 0, got ", options.max_new_tokens);
  options.sampling.validate();
  const int64_t batch = int64_t(prompts.size());
  const int64_t vocab_rows = model.vocab_rows();
  const int64_t sample_vocab = std::min<int64_t>(model.config().vocab_size, vocab_rows);
  int64_t longest = 0;
  for (const auto& p : prompts) {
    MAMBA_CHECK(!p.empty(), "generate: a prompt is empty (a prompt needs at least one token)");
    check_token_ids(p, vocab_rows, "prompt");
    longest = std::max<int64_t>(longest, int64_t(p.size()));
  }

  Tensor ids = Tensor::zeros({batch, longest}, DType::i32);
  Tensor lengths = Tensor::empty({batch}, DType::i32);
  for (int64_t b = 0; b < batch; ++b) {
    const auto& p = prompts[size_t(b)];
    std::copy(p.begin(), p.end(), ids.data<int32_t>() + b * longest);
    lengths.data<int32_t>()[b] = int32_t(p.size());
  }

  std::vector<Rng> rngs;
  for (int64_t b = 0; b < batch; ++b) rngs.emplace_back(options.sampling.seed, uint64_t(b));
  std::vector<std::vector<int32_t>> context(prompts.begin(), prompts.end());
  std::vector<std::vector<int32_t>> outputs(static_cast<size_t>(batch));
  std::vector<bool> done(size_t(batch), options.max_new_tokens == 0);

  Timer timer;
  model::InferenceState own_state;
  if (state) {
    MAMBA_CHECK(state->batch == batch, "generate: the saved state holds ", state->batch, " sequences, but ", batch,
                " prompts were given");
  } else {
    own_state = model.new_state(batch);
    state = &own_state;
  }
  Tensor logits = model.prefill(*state, ids, lengths, options.prefill_chunk);
  double prefill_seconds = timer.seconds();
  timer.reset();
  int64_t produced = 0, produced_from_prefill = 0;
  Tensor next = Tensor::zeros({batch}, DType::i32);
  // Greedy choice without a repetition penalty needs no context: it is taken where the logits are
  // (ops::argmax_rows, the choice sample_token makes), so a GPU sends back ids, not logits.
  const bool greedy = options.sampling.temperature == 0 && options.sampling.repeat_penalty == 1.0;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const Tensor host_logits = greedy ? Tensor() : logits.to(Device::cpu);
    const Tensor greedy_ids = greedy ? on_host(ops::argmax_rows(logits, sample_vocab)) : Tensor();
    bool any_active = false;
    for (int64_t b = 0; b < batch; ++b) {
      if (done[size_t(b)]) continue;
      const int32_t token = greedy ? greedy_ids.data<int32_t>()[b]
                                   : sample_token(host_logits.data<float>() + b * vocab_rows, sample_vocab,
                                                  context[size_t(b)], options.sampling, rngs[size_t(b)]);
      next.data<int32_t>()[b] = token;
      if (!options.ignore_eos && token == options.eos_token_id) {
        done[size_t(b)] = true;
        continue;
      }
      context[size_t(b)].push_back(token);
      outputs[size_t(b)].push_back(token);
      ++produced;
      if (step == 0) ++produced_from_prefill;
      if (on_token) on_token(b, token);
      if (int64_t(outputs[size_t(b)].size()) >= options.max_new_tokens) done[size_t(b)] = true;
      any_active = any_active || !done[size_t(b)];
    }
    // A caller's state must end up holding every token, the last new one included.
    if (!any_active && state == &own_state) break;
    logits = model.step(*state, next);
    if (!any_active) break;
  }
  if (stats) {
    stats->prompt_tokens = 0;
    for (const auto& p : prompts) stats->prompt_tokens += int64_t(p.size());
    stats->new_tokens = produced;
    stats->decode_tokens = produced - produced_from_prefill;
    stats->prefill_seconds = prefill_seconds;
    stats->decode_seconds = timer.seconds();
  }
  return outputs;
}

}  // namespace mamba::generate

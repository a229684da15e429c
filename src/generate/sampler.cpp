#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace mamba::generate {

void SamplingParams::validate() const {
  MAMBA_CHECK(std::isfinite(temperature) && temperature >= 0, "--temperature: expected a number ≥ 0, got ",
              temperature);
  MAMBA_CHECK(top_k >= 0, "--top-k: expected a count ≥ 0 (0 = off), got ", top_k);
  MAMBA_CHECK(std::isfinite(top_p) && top_p > 0 && top_p <= 1, "--top-p: expected a number in (0, 1], got ", top_p);
  MAMBA_CHECK(std::isfinite(min_p) && min_p >= 0 && min_p <= 1, "--min-p: expected a number in [0, 1], got ", min_p);
  MAMBA_CHECK(std::isfinite(repeat_penalty) && repeat_penalty > 0,
              "--repeat-penalty: expected a number > 0 (1 = off), got ", repeat_penalty);
}

int32_t sample_token(const float* logits, int64_t vocab_size, const std::vector<int32_t>& context,
                     const SamplingParams& params, Rng& rng) {
  std::vector<double> scores(logits, logits + vocab_size);
  if (params.repeat_penalty != 1.0) {
    std::vector<bool> seen(size_t(vocab_size), false);
    for (int32_t id : context)
      if (id >= 0 && id < vocab_size && !seen[size_t(id)]) {
        seen[size_t(id)] = true;
        double& s = scores[size_t(id)];
        s = s > 0 ? s / params.repeat_penalty : s * params.repeat_penalty;
      }
  }
  if (params.temperature == 0) return int32_t(std::max_element(scores.begin(), scores.end()) - scores.begin());

  for (double& s : scores) s /= params.temperature;
  std::vector<int32_t> order(static_cast<size_t>(vocab_size));
  std::iota(order.begin(), order.end(), 0);
  auto by_score = [&](int32_t a, int32_t b) {
    return scores[size_t(a)] > scores[size_t(b)] || (scores[size_t(a)] == scores[size_t(b)] && a < b);
  };
  size_t keep = order.size();
  if (params.top_k > 0 && size_t(params.top_k) < keep) {
    keep = size_t(params.top_k);
    std::partial_sort(order.begin(), order.begin() + long(keep), order.end(), by_score);
  } else {
    std::sort(order.begin(), order.end(), by_score);
  }
  std::vector<double> probs(keep);
  double top = scores[size_t(order[0])], total = 0;
  for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp(scores[size_t(order[i])] - top);
  for (double& p : probs) p /= total;
  if (params.top_p < 1.0) {
    double cumulative = 0;
    size_t n = 0;
    while (n < keep && cumulative < params.top_p) cumulative += probs[n++];
    keep = std::max<size_t>(n, 1);
  }
  if (params.min_p > 0) {
    size_t n = 1;
    while (n < keep && probs[n] >= params.min_p * probs[0]) ++n;
    keep = n;
  }
  double mass = std::accumulate(probs.begin(), probs.begin() + long(keep), 0.0);
  double draw = rng.uniform() * mass;
  for (size_t i = 0; i < keep; ++i) {
    draw -= probs[i];
    if (draw < 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace mamba::generate

#include <gtest/gtest.h>

#include <map>

#include "core/error.h"
#include "generate/sampler.h"

namespace mamba::generate {

TEST(Sampler, GreedyTakesArgmaxWithinVocabulary) {
  std::vector<float> logits = {0.1f, 2.0f, 0.5f, 9.0f};  // id 3 is a padding row
  SamplingParams p;
  p.temperature = 0;
  Rng rng(1);
  EXPECT_EQ(sample_token(logits.data(), 3, {}, p, rng), 1);
  EXPECT_EQ(sample_token(logits.data(), 4, {}, p, rng), 3);
}

TEST(Sampler, RepetitionPenaltyComesBeforeGreedy) {
  std::vector<float> logits = {2.0f, 1.5f, -1.0f};
  SamplingParams p;
  p.temperature = 0;
  p.repeat_penalty = 2.0;
  Rng rng(1);
  EXPECT_EQ(sample_token(logits.data(), 3, {0}, p, rng), 1);  // 2.0 / 2 = 1.0 < 1.5
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  std::vector<float> logits = {0.3f, 0.1f, 1.2f, 1.1f};
  for (int trial = 0; trial < 2; ++trial) {
    SamplingParams p;
    p.temperature = 1.5;
    if (trial == 0)
      p.top_k = 1;
    else
      p.top_p = 1e-6;
    Rng rng(static_cast<uint64_t>(trial));
    for (int i = 0; i < 50; ++i) ASSERT_EQ(sample_token(logits.data(), 4, {}, p, rng), 2);
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  // Probabilities ∝ e^0, e^-1, e^-5: with min_p 0.2 the last (ratio e^-5) is never drawn.
  std::vector<float> logits = {0.0f, -1.0f, -5.0f};
  SamplingParams p;
  p.min_p = 0.2;
  Rng rng(3);
  std::map<int, int> counts;
  for (int i = 0; i < 2000; ++i) counts[sample_token(logits.data(), 3, {}, p, rng)]++;
  EXPECT_EQ(counts[2], 0);
  EXPECT_GT(counts[1], 300);  // e^-1/(1+e^-1) ≈ 27% of 2000
  EXPECT_GT(counts[0], 1200);
}

TEST(Sampler, DistributionMatchesSoftmax) {
  std::vector<float> logits = {1.0f, 0.0f};
  SamplingParams p;
  Rng rng(11);
  int zeros = 0, n = 20000;
  for (int i = 0; i < n; ++i) zeros += sample_token(logits.data(), 2, {}, p, rng) == 0;
  double expected = 1.0 / (1.0 + std::exp(-1.0));
  EXPECT_NEAR(double(zeros) / n, expected, 0.015);
}

TEST(Sampler, ValidateNamesTheFlag) {
  SamplingParams p;
  p.temperature = -1;
  try {
    p.validate();
    FAIL() << "negative temperature accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--temperature"), std::string::npos);
  }
  p = {};
  p.top_p = std::nan("");
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.min_p = -0.1;
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.repeat_penalty = 0;
  EXPECT_THROW(p.validate(), Error);
}

}  // namespace mamba::generate

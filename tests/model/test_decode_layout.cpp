// LanguageModel::lay_out_for_decode pads the rows of weight matrices: prefill and decode must
// give the same logits as the contiguous model, for f32 and bf16 weights.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "core/threads.h"
#include "model/language_model.h"
#include "model/presets.h"

namespace mamba::model {
namespace {

TEST(DecodeLayout, PaddedWeightRowsGiveTheSameLogits) {
  set_num_threads(2);
  // d_model 512 and d_inner 1024: f32 rows of 2 and 4 KiB (in_proj, embedding and tied LM head,
  // x_proj, out_proj) and bf16 rows of 2 KiB (x_proj, out_proj) are padded.
  io::ModelConfig c = preset_config("tiny", "test");
  c.d_model = 512;
  c.d_inner = 1024;
  c.dt_rank = 32;
  c.n_layer = 2;
  c.vocab_size = 67;
  for (DType weights : {DType::f32, DType::bf16}) {
    auto contiguous = LanguageModel::initialize(c, 5, Device::cpu);
    auto padded = LanguageModel::initialize(c, 5, Device::cpu);
    contiguous->convert_weight_matrices(weights);
    padded->convert_weight_matrices(weights);
    padded->lay_out_for_decode();
    EXPECT_FALSE(padded->parameter("backbone.layers.1.mixer.out_proj.weight").value.is_contiguous());
    EXPECT_EQ(padded->parameter("backbone.embeddings.weight").value.is_contiguous(), weights == DType::bf16);

    Rng rng(6);
    Tensor prompt = Tensor::empty({2, 9}, DType::i32);
    for (int64_t i = 0; i < prompt.numel(); ++i) prompt.data<int32_t>()[i] = int32_t(rng.below(67));
    InferenceState a = contiguous->new_state(2), b = padded->new_state(2);
    Tensor expected = contiguous->prefill(a, prompt), got = padded->prefill(b, prompt);
    EXPECT_LT(relative_error(got, expected), 1e-6) << "prefill, " << dtype_name(weights);
    for (int step = 0; step < 3; ++step) {
      Tensor token = Tensor::from_vector({double(step), double(step + 40)}, {2}, DType::i32);
      expected = contiguous->step(a, token);
      got = padded->step(b, token);
      EXPECT_LT(relative_error(got, expected), 1e-6) << "step " << step << ", " << dtype_name(weights);
    }
    // Saving sees contiguous tensors again.
    EXPECT_TRUE(padded->state_dict().at("backbone.layers.0.mixer.in_proj.weight").is_contiguous());
  }
}

}  // namespace
}  // namespace mamba::model

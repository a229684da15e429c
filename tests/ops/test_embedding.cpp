#include <gtest/gtest.h>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/embedding.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

TEST(OpsEmbedding, CpuMatchesReference) {
  set_num_threads(2);
  Rng rng(41);
  const int64_t V = 53, d = 37;
  for (DType wt : {DType::f32, DType::bf16, DType::f16})
    for (DType id_type : {DType::i32, DType::i64}) {
      Tensor w = random_tensor({V, d}, wt, rng);
      std::vector<double> ids;
      for (int i = 0; i < 2 * 19; ++i) ids.push_back(double(rng.below(V)));
      Tensor id = Tensor::from_vector(ids, {2, 19}, id_type);
      Tensor got = embedding_forward(w, id);
      EXPECT_EQ(got.shape(), (Shape{2, 19, d}));
      EXPECT_EQ(got.dtype(), DType::f32);
      // A lookup is a copy: exact against the (16-bit rounded) weights.
      EXPECT_EQ(relative_error(got, ref::embedding_forward(w, id)), 0.0) << dtype_name(wt);
      // A tied LM head laid out for CPU decode pads the embedding's rows.
      EXPECT_EQ(relative_error(embedding_forward(w.with_row_stride(d + 3), id), got), 0.0)
          << "padded " << dtype_name(wt);
    }
}

TEST(OpsEmbedding, BackwardAccumulatesRepeatedIds) {
  set_num_threads(2);
  Rng rng(42);
  const int64_t V = 29, d = 17, M = 61;  // M > V: ids repeat
  std::vector<double> ids;
  for (int64_t i = 0; i < M; ++i) ids.push_back(double(rng.below(V)));
  Tensor id = Tensor::from_vector(ids, {M}, DType::i32);
  Tensor dout = random_tensor({M, d}, DType::f32, rng);
  Tensor start = random_tensor({V, d}, DType::f32, rng);
  Tensor dw_cpu = start.clone(), dw_ref = start.to(DType::f64);
  embedding_backward(id, dout, dw_cpu);
  ref::embedding_backward(id, dout, dw_ref);
  EXPECT_LT(relative_error(dw_cpu, dw_ref), 1e-6);
  EXPECT_GT(relative_error(dw_cpu, start), 0.1);  // it did add something
}

TEST(OpsEmbedding, BadIdNamesIdPositionAndVocabulary) {
  Rng rng(43);
  Tensor w = random_tensor({10, 4}, DType::f32, rng);
  Tensor ids = Tensor::from_vector({1, 2, 3, 10, 4}, {5}, DType::i64);
  EXPECT_ERROR_MENTIONS(embedding_forward(w, ids), "token id 10 at position 3 is outside the vocabulary [0, 10)");
  Tensor negative = Tensor::from_vector({-1}, {1}, DType::i32);
  EXPECT_ERROR_MENTIONS(embedding_forward(w, negative), "token id -1 at position 0");
  Tensor dw = Tensor::zeros({10, 4}, DType::f32);
  EXPECT_ERROR_MENTIONS(embedding_backward(ids, random_tensor({5, 4}, DType::f32, rng), dw), "token id 10");
  Tensor ok = Tensor::from_vector({1, 2}, {2}, DType::i32);
  EXPECT_ERROR_MENTIONS(embedding_backward(ok, random_tensor({2, 5}, DType::f32, rng), dw),
                        "embedding output gradient");
  EXPECT_ERROR_MENTIONS(embedding_forward(w, Tensor::from_vector({1}, {1}, DType::f32)), "embedding ids");
}

}  // namespace
}  // namespace mamba::ops

#include <gtest/gtest.h>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/linear.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

// Row counts covering the streaming kernel (one x row, and groups of 2, 3 and 8 rows, whose
// kernels read 8, 4 and 2 weight rows at a time; for 16-bit weights with K ≥ 256, several groups
// of 8 rows) and the BLAS path.
constexpr int64_t kRowCounts[] = {1, 2, 3, 8, 9, 37, 70};

TEST(OpsLinear, CpuMatchesReferenceForEveryWeightDtype) {
  set_num_threads(2);
  Rng rng(11);
  for (DType wt : {DType::f32, DType::bf16, DType::f16})
    // K = 2100: rows longer than a 4 KiB page.
    for (int64_t K : {45, 13, 300, 2100})
      for (int64_t M : kRowCounts)
        // 1001 output rows: several chunks handed out to the threads, ending in a ragged one.
        for (int64_t N : {67, 1001}) {
          Tensor x = random_tensor({M, K}, DType::f32, rng);
          Tensor w = random_tensor({N, K}, wt, rng);
          Tensor b = random_tensor({N}, wt, rng);
          Tensor expected = ref::linear_forward(x, w, b);  // on the same 16-bit-rounded weights
          Tensor got = cpu::linear_forward(x, w, b);
          EXPECT_EQ(got.shape(), (Shape{M, N}));
          EXPECT_LT(relative_error(got, expected), 1e-5) << dtype_name(wt) << " M=" << M << " K=" << K << " N=" << N;
          // The same weights with padded rows (LanguageModel::lay_out_for_decode), padding not
          // a whole vector long, so every kernel must step rows by the stride and not by K.
          Tensor padded = w.with_row_stride(K + 5);
          EXPECT_LT(relative_error(cpu::linear_forward(x, padded, b), expected), 1e-5)
              << "padded rows, " << dtype_name(wt) << " M=" << M << " K=" << K << " N=" << N;
        }
}

// CPU decode pads rows a multiple of 2 KiB long by one cache line, and leaves the others.
TEST(OpsLinear, DecodeRowStridePadsRowsOfWhole2KiBBlocks) {
  EXPECT_EQ(decode_row_stride(Tensor::empty({3, 1024}, DType::f32)), 1040);
  EXPECT_EQ(decode_row_stride(Tensor::empty({3, 512}, DType::f32)), 528);
  EXPECT_EQ(decode_row_stride(Tensor::empty({3, 1024}, DType::bf16)), 1056);
  EXPECT_EQ(decode_row_stride(Tensor::empty({3, 768}, DType::f32)), 768);
  EXPECT_EQ(decode_row_stride(Tensor::empty({3, 768}, DType::bf16)), 768);
  EXPECT_THROW(decode_row_stride(Tensor::empty({3}, DType::f32)), Error);
}

TEST(OpsLinear, LeadingDimensionsAreRows) {
  Rng rng(12);
  Tensor x = random_tensor({2, 3, 21}, DType::f32, rng);
  Tensor w = random_tensor({5, 21}, DType::f32, rng);
  Tensor y = linear_forward(x, w);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
  EXPECT_LT(relative_error(y, ref::linear_forward(x, w)), 1e-5);
}

TEST(OpsLinear, CpuBackwardMatchesReference) {
  set_num_threads(2);
  Rng rng(13);
  // The last shape takes the tiled kernel's other paths: depth blocks of 256 for dx (N) and dW
  // (M), ragged 128-column work items, and dW's rows split into items.
  struct Shape3 {
    int64_t M, N, K;
  };
  for (DType wt : {DType::f32, DType::bf16})
    for (const auto [M, N, K] : {Shape3{1, 39, 27}, Shape3{5, 39, 27}, Shape3{70, 39, 27}, Shape3{300, 400, 150}}) {
      Tensor x = random_tensor({M, K}, DType::f32, rng);
      Tensor w = random_tensor({N, K}, wt, rng);
      Tensor dy = random_tensor({M, N}, DType::f32, rng);
      // The gradient buffers start non-zero: backward must accumulate into them.
      Tensor dw_start = random_tensor({N, K}, DType::f32, rng), db_start = random_tensor({N}, DType::f32, rng);
      Tensor dw_cpu = dw_start.clone(), db_cpu = db_start.clone();
      Tensor dw_ref = dw_start.to(DType::f64), db_ref = db_start.to(DType::f64);
      Tensor dx_cpu = cpu::linear_backward(x, w, dy, &dw_cpu, &db_cpu);
      Tensor dx_ref = ref::linear_backward(x, w, dy, &dw_ref, &db_ref);
      EXPECT_LT(relative_error(dx_cpu, dx_ref), 1e-5) << dtype_name(wt) << " M=" << M;
      EXPECT_LT(relative_error(dw_cpu, dw_ref), 1e-5) << dtype_name(wt) << " M=" << M;
      EXPECT_LT(relative_error(db_cpu, db_ref), 1e-5) << dtype_name(wt) << " M=" << M;
      Tensor dx_padded = cpu::linear_backward(x, w.with_row_stride(K + 3), dy, nullptr, nullptr);
      EXPECT_LT(relative_error(dx_padded, dx_ref), 1e-5) << "padded rows, " << dtype_name(wt) << " M=" << M;
    }
}

// dx added into a given tensor (the entry point's dx_into) is that tensor plus the reference's dx.
TEST(OpsLinear, BackwardAddsIntoDxInto) {
  Rng rng(16);
  Tensor x = random_tensor({7, 13}, DType::f32, rng), w = random_tensor({5, 13}, DType::f32, rng);
  Tensor dy = random_tensor({7, 5}, DType::f32, rng), start = random_tensor({7, 13}, DType::f32, rng);
  Tensor into = start.clone();
  Tensor dx = linear_backward(x, w, dy, nullptr, nullptr, &into);
  EXPECT_EQ(dx.raw(), into.raw());
  std::vector<double> expected = ref::linear_backward(x, w, dy, nullptr, nullptr).to_double_vector();
  const std::vector<double> start_values = start.to_double_vector();
  for (size_t i = 0; i < expected.size(); ++i) expected[i] += start_values[i];
  EXPECT_LT(relative_error(into, Tensor::from_vector(expected, {7, 13}, DType::f64)), 1e-5);
  Tensor wrong = Tensor::zeros({7, 12}, DType::f32);
  EXPECT_ERROR_MENTIONS(linear_backward(x, w, dy, nullptr, nullptr, &wrong), "linear input gradient dx_into");
}

TEST(OpsLinear, ReferenceBackwardMatchesFiniteDifferences) {
  Rng rng(14);
  Tensor x = random_tensor({3, 5}, DType::f64, rng), w = random_tensor({4, 5}, DType::f64, rng);
  Tensor b = random_tensor({4}, DType::f64, rng), dy = random_tensor({3, 4}, DType::f64, rng);
  auto loss = [&] { return testing::dot(ref::linear_forward(x, w, b), dy); };
  Tensor dw = Tensor::zeros({4, 5}, DType::f64), db = Tensor::zeros({4}, DType::f64);
  Tensor dx = ref::linear_backward(x, w, dy, &dw, &db);
  EXPECT_LT(relative_error(dx, testing::numeric_gradient(x, loss)), 1e-7);
  EXPECT_LT(relative_error(dw, testing::numeric_gradient(w, loss)), 1e-7);
  EXPECT_LT(relative_error(db, testing::numeric_gradient(b, loss)), 1e-7);
}

TEST(OpsLinear, ShapeMismatchesNameTheTensor) {
  Rng rng(15);
  Tensor x = random_tensor({2, 6}, DType::f32, rng), w = random_tensor({4, 5}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(linear_forward(x, w), "linear input x");
  Tensor w_ok = random_tensor({4, 6}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(linear_forward(x, w_ok, random_tensor({3}, DType::f32, rng)), "linear bias");
  Tensor dy_bad = random_tensor({2, 5}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(linear_backward(x, w_ok, dy_bad, nullptr, nullptr), "linear output gradient dy");
  Tensor dw_bad = Tensor::zeros({4, 5}, DType::f32);
  EXPECT_ERROR_MENTIONS(linear_backward(x, w_ok, random_tensor({2, 4}, DType::f32, rng), &dw_bad, nullptr),
                        "linear weight gradient");
  EXPECT_ERROR_MENTIONS(cpu::linear_forward(x.to(DType::f64), w_ok, {}), "f32 activations");
}

TEST(OpsLinear, CudaTensorWithoutCudaBuildIsAClearError) {
  if (cuda_compiled()) GTEST_SKIP() << "this build has CUDA";
  float dummy[6] = {};
  Tensor x = Tensor::wrap(dummy, {1, 6}, DType::f32, nullptr, Device::cuda);
  Tensor w = Tensor::wrap(dummy, {1, 6}, DType::f32, nullptr, Device::cuda);
  EXPECT_ERROR_MENTIONS(linear_forward(x, w), "no CUDA support");
  Rng rng(16);
  EXPECT_ERROR_MENTIONS(linear_forward(x, random_tensor({1, 6}, DType::f32, rng)), "linear weight: tensor is on cpu");
}

}  // namespace
}  // namespace mamba::ops

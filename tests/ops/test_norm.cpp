#include <gtest/gtest.h>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/elementwise.h"
#include "ops/norm.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

struct NormCase {
  NormKind kind;
  bool residual, bias;
  DType weight_dtype;
};

NormInputs make_inputs(const NormCase& c, int64_t M, int64_t d, DType act, Rng& rng) {
  NormInputs in;
  in.kind = c.kind;
  in.x = random_tensor({M, d}, act, rng, -2, 2);
  if (c.residual) in.residual = random_tensor({M, d}, act, rng, -2, 2);
  in.weight = random_tensor({d}, c.weight_dtype == DType::f64 ? act : c.weight_dtype, rng, 0.5, 1.5);
  if (c.bias) in.bias = random_tensor({d}, c.weight_dtype == DType::f64 ? act : c.weight_dtype, rng);
  in.eps = 1e-5f;
  return in;
}

const NormCase kCases[] = {
    {NormKind::rms, true, false, DType::f32},    {NormKind::rms, false, false, DType::bf16},
    {NormKind::layer, true, true, DType::f32},   {NormKind::layer, false, true, DType::f16},
    {NormKind::layer, true, false, DType::bf16},
};

TEST(OpsNorm, CpuMatchesReference) {
  set_num_threads(2);
  Rng rng(21);
  for (const NormCase& c : kCases)
    for (int64_t d : {67, 300}) {
      const int64_t M = 7;
      NormInputs in = make_inputs(c, M, d, DType::f32, rng);
      NormOutputs got = cpu::add_norm_forward(in), expected = ref::add_norm_forward(in);
      std::string what = std::string(c.kind == NormKind::rms ? "rms" : "layer") + " d=" + std::to_string(d);
      EXPECT_LT(relative_error(got.out, expected.out), 1e-5) << what;
      EXPECT_LT(relative_error(got.residual_out, expected.residual_out), 1e-6) << what;
      EXPECT_LT(relative_error(got.rstd, expected.rstd), 1e-6) << what;
      if (c.kind == NormKind::layer) {
        EXPECT_LT(relative_error(got.mean, expected.mean), 1e-5) << what;
      }

      Tensor dout = random_tensor({M, d}, DType::f32, rng), dres = random_tensor({M, d}, DType::f32, rng);
      NormGrads g = cpu::add_norm_backward(in, got, dout, dres), e = ref::add_norm_backward(in, expected, dout, dres);
      EXPECT_LT(relative_error(g.ds, e.ds), 1e-5) << what;
      EXPECT_LT(relative_error(g.dweight, e.dweight), 1e-5) << what;
      EXPECT_EQ(g.dbias.defined(), c.bias) << what;
      if (c.bias) {
        EXPECT_LT(relative_error(g.dbias, e.dbias), 1e-5) << what;
      }
      // Into the caller's gradients (a model's): added onto what is there, none returned.
      Tensor dw_into = random_tensor({d}, DType::f32, rng), db_into = random_tensor({d}, DType::f32, rng);
      Tensor dw_expected = dw_into.clone(), db_expected = db_into.clone();
      add_(dw_expected, g.dweight);
      if (c.bias) add_(db_expected, g.dbias);
      NormGrads into = add_norm_backward(in, got, dout, dres, &dw_into, c.bias ? &db_into : nullptr);
      EXPECT_FALSE(into.dweight.defined() || into.dbias.defined()) << what;
      EXPECT_LT(relative_error(into.ds, g.ds), 1e-7) << what;
      EXPECT_LT(relative_error(dw_into, dw_expected), 1e-6) << what;
      EXPECT_LT(relative_error(db_into, db_expected), 1e-6) << what;
      // Without a gradient from later layers, ds is only the norm's own gradient.
      NormGrads plain = add_norm_backward(in, got, dout);
      EXPECT_LT(relative_error(plain.ds, ref::add_norm_backward(in, expected, dout).ds), 1e-5) << what;
    }
}

TEST(OpsNorm, ReferenceBackwardMatchesFiniteDifferences) {
  Rng rng(22);
  for (NormKind kind : {NormKind::rms, NormKind::layer}) {
    NormInputs in = make_inputs({kind, true, kind == NormKind::layer, DType::f64}, 3, 6, DType::f64, rng);
    Tensor dout = random_tensor({3, 6}, DType::f64, rng), dres = random_tensor({3, 6}, DType::f64, rng);
    // loss = Σ out·dout + Σ residual_out·dres
    auto loss = [&] {
      NormOutputs o = ref::add_norm_forward(in);
      return testing::dot(o.out, dout) + testing::dot(o.residual_out, dres);
    };
    NormGrads g = ref::add_norm_backward(in, ref::add_norm_forward(in), dout, dres);
    EXPECT_LT(relative_error(g.ds, testing::numeric_gradient(in.x, loss)), 1e-7);
    EXPECT_LT(relative_error(g.ds, testing::numeric_gradient(in.residual, loss)), 1e-7);
    EXPECT_LT(relative_error(g.dweight, testing::numeric_gradient(in.weight, loss)), 1e-7);
    if (kind == NormKind::layer) {
      EXPECT_LT(relative_error(g.dbias, testing::numeric_gradient(in.bias, loss)), 1e-7);
    }
  }
}

TEST(OpsNorm, RmsNormOfAConstantRowIsTheWeight) {
  NormInputs in;
  in.x = Tensor::from_vector({3, 3, 3, 3}, {1, 4}, DType::f32);
  in.weight = Tensor::from_vector({1, 2, 3, 4}, {4}, DType::f32);
  in.eps = 0;
  NormOutputs o = add_norm_forward(in);
  EXPECT_LT(relative_error(o.out, in.weight.view({1, 4})), 1e-7);
  EXPECT_NEAR(o.rstd.item(0), 1.0 / 3.0, 1e-7);
}

TEST(OpsNorm, BadInputsNameTheTensor) {
  Rng rng(23);
  NormInputs in = make_inputs({NormKind::rms, true, false, DType::f32}, 2, 8, DType::f32, rng);
  NormInputs bad = in;
  bad.weight = random_tensor({7}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(add_norm_forward(bad), "norm weight");
  bad = in;
  bad.residual = random_tensor({2, 9}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(add_norm_forward(bad), "norm residual");
  bad = in;
  bad.bias = random_tensor({8}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(add_norm_forward(bad), "only LayerNorm takes a bias");
  NormOutputs saved = add_norm_forward(in);
  EXPECT_ERROR_MENTIONS(add_norm_backward(in, saved, random_tensor({2, 7}, DType::f32, rng)), "norm output gradient");
  const Tensor dout = random_tensor({2, 8}, DType::f32, rng);
  Tensor wrong_shape = random_tensor({7}, DType::f32, rng), not_f32 = random_tensor({8}, DType::bf16, rng);
  EXPECT_ERROR_MENTIONS(add_norm_backward(in, saved, dout, {}, &wrong_shape), "norm weight gradient");
  EXPECT_ERROR_MENTIONS(add_norm_backward(in, saved, dout, {}, &not_f32), "norm weight gradient");
  Tensor bias_grad = random_tensor({8}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(add_norm_backward(in, saved, dout, {}, nullptr, &bias_grad), "the norm has no bias");
}

}  // namespace
}  // namespace mamba::ops

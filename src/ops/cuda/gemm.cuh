// Row-major GEMM through cuBLASLt: D[m, n] = α·op(A)·op(B) + β·D, float32 accumulation.
//
// A row-major [r, c] matrix is a column-major [c, r] one, so the row-major product is computed
// as the column-major product of the transposes with the operands swapped. Float32 inputs use
// plain float32 arithmetic (TF32 off); bf16/f16 inputs use the tensor cores. D is float32 or the
// inputs' type.
#pragma once
#include "core/tensor.h"

namespace mamba::ops::cuda_detail {

struct GemmOperand {
  const void* data;
  DType dtype;
  int64_t rows, cols;  // of the stored row-major matrix
  bool transpose;      // use its transpose in the product
};

// d: row-major [m, n] of dtype d_type; both operands share one dtype (f32, bf16 or f16).
void gemm(const GemmOperand& a, const GemmOperand& b, void* d, DType d_type, float alpha, float beta);

}  // namespace mamba::ops::cuda_detail

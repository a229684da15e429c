// Linear layer: y = x · Wᵀ + b, for rows x [M, K], weight W [N, K] (the PyTorch layout), bias [N].
// x may have more leading dimensions ([..., K]): they are all rows, and y is [..., N].
//
// Weights may be f32, bf16 or f16 (16-bit weights stay 16-bit in memory; products accumulate in
// float32). Activations are f32 on the CPU; on CUDA a product runs in bf16 when x or W is bf16
// (x rounded to bf16, float32 accumulation, y in x's dtype), which mixed-precision training uses. M = 1 (decode) is a
// mat-vec bound by streaming W, handled by a dedicated kernel that reads W once (also for small M: batched decode);
// larger M goes to the BLAS GEMM (CPU, see ops/cpu/gemm.h) or cuBLASLt (CUDA).
//
// linear_forward_split returns y as column pieces [M, wᵢ] (Σ wᵢ = N): split_columns(linear_forward(…))
// as one step, whose CUDA decode product writes the pieces itself (no copies: Mamba's x_proj →
// δ, B, C at batch > 1). Pieces of at least kWidePiece columns (Mamba's in_proj → x, z) are each
// a product over their rows of W, so no copy is made either; narrow ones are split off one product,
// and so are all pieces of a single row of x (they are views of its one output row) and, on CUDA,
// of up to kOneProductCudaRows rows: there one cuBLASLt product over all of W and a copy beat a
// product per piece (the 1.4b in_proj at batch 16, [16, 2048] × [8192, 2048]ᵀ: −2 to −3.5% per
// decode step, docs/perf/cuda_model.md m29).
// linear_backward_split is its backward, taking dy as those pieces: wide pieces each take their
// own products (dx of the first, added onto by the others), narrow ones are joined first.
//
// Backward: dx = dy · W;  dW += dyᵀ · x;  db += Σ_rows dy   (dW, db accumulate: they are f32
// gradient buffers the caller zeroes once per step, so gradient accumulation needs no copies).
// With overwrite_dweight, dW = dyᵀ · x replaces what dweight holds: a gradient buffer's first
// writer in a pass (the trainer's first micro-batch) then needs no zeroed buffer, and on CUDA the
// product does not read the old values.
// With dx_into (shape of x, dtype of the dx the backend returns) dx is added into that tensor,
// which is returned: an input that also feeds another branch (Mamba's x_conv: x_proj and the scan)
// gets its summed gradient without a separate pass over it (on CUDA the product adds it itself).
#pragma once
#include <optional>
#include <vector>

#include "core/tensor.h"

namespace mamba::ops {

// Validate shapes, dtypes and devices with messages naming the tensor; used by every backend.
void check_linear_inputs(const Tensor& x, const Tensor& weight, const Tensor& bias);
void check_linear_backward_inputs(const Tensor& x, const Tensor& weight, const Tensor& dy, const Tensor* dweight,
                                  const Tensor* dbias, const Tensor* dx_into = nullptr);

constexpr int64_t kWidePiece = 256;
constexpr int64_t kOneProductCudaRows = 16;

// The row stride (elements) at which the decode product of weight's device reads it fastest; the
// model copies a weight to it with Tensor::with_row_stride for inference. CPU: rows a multiple
// of 2 KiB long get one cache line of padding, since the mat-vec's 16 row streams would otherwise
// all sit at one offset of their 4 KiB pages and read memory 15–25% more slowly
// (docs/perf/cpu_model.md, v10; 16-bit weights read one row at a time at batch 1 since v13, but
// batched decode still reads them in groups of spread rows). CUDA: size(1), contiguous.
int64_t decode_row_stride(const Tensor& weight);

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
std::vector<Tensor> linear_forward_split(const Tensor& x, const Tensor& weight, const std::vector<int64_t>& widths,
                                         const Tensor& bias = {});
Tensor linear_backward_split(const Tensor& x, const Tensor& weight, const std::vector<Tensor>& dy_pieces,
                             Tensor* dweight, Tensor* dbias, Tensor* dx_into = nullptr, bool overwrite_dweight = false);
// Returns dx (f32, or dtype of x on CUDA). dweight / dbias may be null to skip them.
Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias,
                       Tensor* dx_into = nullptr, bool overwrite_dweight = false);

namespace ref {  // float64 loops; outputs f64, dweight/dbias of any float dtype accumulate
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias);
}  // namespace ref
namespace cpu {
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias);
Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias);
}  // namespace cpu
namespace cuda {
Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias);
// The pieces written by one product, or nullopt when the decode product does not take these inputs.
std::optional<std::vector<Tensor>> linear_forward_split(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                                        const std::vector<int64_t>& widths);
Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias,
                       Tensor* dx_into, bool overwrite_dweight);
}  // namespace cuda

}  // namespace mamba::ops

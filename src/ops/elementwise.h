// Small element-wise ops the model needs between the big ones.
//
//   add_(a, b):          a += b                        (same shape and dtype: f32; bf16 on CUDA)
//   split_columns(x, w): [M, Σw] → one [M, wᵢ] tensor per width (copies; views of x when M = 1)
//   concat_columns:      the inverse of split_columns (used by backward to assemble d[x|z])
//   copy_all_(dst, src): dst[i] = src[i] for every pair (contiguous, same shape and element size;
//                        on CUDA one launch for up to 64 pairs: a prefill's states in and out)
//   scale_(a, s):        a *= s
//   convert(x, dtype):   a copy of x in dtype (f32, bf16), made on x's device
//   negative_exp(x):     −exp(x) in f32 from x of any float dtype (Mamba's A = −exp(A_log))
//   add_product_(a, b, c): a += b ⊙ c (f32, same shapes; the chain rule dA_log += dA ⊙ A)
// The last two run where the parameters live, so training never copies them to the host.
// x may have more leading dimensions ([..., Σw]): they are all rows. split/concat copy any dtype.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace mamba::ops {

// Entry points: dispatch on the device of the first tensor.
void add_(Tensor& a, const Tensor& b);
void scale_(Tensor& a, double s);
Tensor convert(const Tensor& x, DType dtype);
Tensor negative_exp(const Tensor& x);
void add_product_(Tensor& a, const Tensor& b, const Tensor& c);
std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& widths);
Tensor concat_columns(const std::vector<Tensor>& parts);
void copy_all_(const std::vector<Tensor>& dst, const std::vector<Tensor>& src);

namespace cpu {
void add_(Tensor& a, const Tensor& b);
void scale_(Tensor& a, double s);
Tensor convert(const Tensor& x, DType dtype);
Tensor negative_exp(const Tensor& x);
void add_product_(Tensor& a, const Tensor& b, const Tensor& c);
std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& widths);
Tensor concat_columns(const std::vector<Tensor>& parts);
void copy_all_(const std::vector<Tensor>& dst, const std::vector<Tensor>& src);
}  // namespace cpu
namespace cuda {
void add_(Tensor& a, const Tensor& b);
void scale_(Tensor& a, double s);
Tensor convert(const Tensor& x, DType dtype);
Tensor negative_exp(const Tensor& x);
void add_product_(Tensor& a, const Tensor& b, const Tensor& c);
std::vector<Tensor> split_columns(const Tensor& x, const std::vector<int64_t>& widths);
Tensor concat_columns(const std::vector<Tensor>& parts);
void copy_all_(const std::vector<Tensor>& dst, const std::vector<Tensor>& src);
}  // namespace cuda

}  // namespace mamba::ops

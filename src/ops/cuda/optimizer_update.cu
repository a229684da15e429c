// CUDA optimiser updates (ops/optimizer_update.h): one grid-stride kernel per parameter, and a
// two-kernel squared norm (fixed-size per-block partials, then one block adds them in order) so
// the result does not depend on scheduling.
#include "ops/cuda/common.cuh"
#include "ops/optimizer_update.h"

namespace mamba::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kNormBlocks = 256;  // partials per norm; fixed so the summation order is too

unsigned grid_for(int64_t n) {
  return unsigned(
      std::min<int64_t>(cuda_detail::blocks_for(n, kThreads), 8 * int64_t(cuda_detail::multiprocessor_count())));
}

__global__ void adamw_kernel(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                             AdamWScalars s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float g = grad[i];
    float p = param[i] * s.decay_factor;
    float m = exp_avg[i] + s.one_minus_beta1 * (g - exp_avg[i]);
    float v = exp_avg_sq[i] * s.beta2 + s.one_minus_beta2 * (g * g);
    float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
    param[i] = p - s.step_size * (m / denom);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

__global__ void sgd_kernel(float* param, const float* grad, float* buffer, int64_t n, SgdScalars s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float g = grad[i] + s.weight_decay * param[i];
    if (buffer) {
      g = s.first_step ? g : s.momentum * buffer[i] + g;
      buffer[i] = g;
    }
    param[i] -= s.lr * g;
  }
}

__device__ double block_sum_double(double v, double* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < blockDim.x / 32; ++w) total += scratch[w];
  return total;  // valid in thread 0
}

__global__ void squares_partial_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double scratch[kThreads / 32];
  double sum = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    sum += double(x[i]) * double(x[i]);
  double block = block_sum_double(sum, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = block;
}

__global__ void squares_total_kernel(const double* partial, int count, double* total) {
  __shared__ double scratch[kThreads / 32];
  double v = threadIdx.x < count ? partial[threadIdx.x] : 0.0;
  double block = block_sum_double(v, scratch);
  if (threadIdx.x == 0) total[0] += block;
}

}  // namespace

void adamw_update_(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWScalars& s) {
  const int64_t n = param.numel();
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), kThreads>>>(param.data<float>(), grad.data<float>(), exp_avg.data<float>(),
                                          exp_avg_sq.data<float>(), n, s);
  cuda_detail::check_launch("adamw_kernel");
}

void sgd_update_(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, const SgdScalars& s) {
  const int64_t n = param.numel();
  if (n == 0) return;
  float* buffer = momentum_buffer.defined() ? momentum_buffer.data<float>() : nullptr;
  sgd_kernel<<<grid_for(n), kThreads>>>(param.data<float>(), grad.data<float>(), buffer, n, s);
  cuda_detail::check_launch("sgd_kernel");
}

void accumulate_sum_of_squares(const Tensor& x, Tensor& total) {
  static_assert(kNormBlocks <= kThreads, "one block adds all partials");
  if (x.numel() == 0) return;
  Tensor partial = Tensor::empty({kNormBlocks}, DType::f64, Device::cuda);
  squares_partial_kernel<<<kNormBlocks, kThreads>>>(x.data<float>(), x.numel(), partial.data<double>());
  cuda_detail::check_launch("squares_partial_kernel");
  squares_total_kernel<<<1, kThreads>>>(partial.data<double>(), kNormBlocks, total.data<double>());
  cuda_detail::check_launch("squares_total_kernel");
}

}  // namespace mamba::ops::cuda

// Selective scan (the S6 layer of Mamba-1), forward, backward and the one-token decode step.
//
// For batch b, position t, channel d and state n (layouts are token-major: [batch, length, ...]):
//   δ'ₜ[d]   = softplus(δₜ[d] + bias[d])  when delta_softplus, else δₜ[d] + bias[d]  (bias optional)
//   hₜ[d,n]  = exp(δ'ₜ[d]·A[d,n]) · h_{t−1}[d,n] + δ'ₜ[d] · Bₜ[n] · uₜ[d],   h_{−1} = initial state or 0
//   yₜ[d]    = Σₙ Cₜ[n] · hₜ[d,n] + D[d] · uₜ[d]                               (D optional)
//   outₜ[d]  = yₜ[d] · SiLU(zₜ[d])  when z is given, else yₜ[d]
// softplus(x) = log(1 + eˣ), and x itself for x > 20.
//
// Variable lengths: with `lengths`, sequence b covers positions [0, lengths[b]); outputs past it
// are 0 and the state is not advanced by them, so right-padded batches leave each sequence's true
// last state. last_state is h at position lengths[b] − 1 (the initial state when the length is 0).
//
// Backends: ref:: (float64 loops, any input dtype, outputs f64), cpu:: (f32 | bf16 inputs), cuda::.
// The reference also takes f64 for every f32 tensor below (A, D, delta_bias, initial_state,
// dlast_state, the step's state); the CPU dispatch sends f64 activations to ref::.
//
// Fast kernels never store the expanded state [batch, L, D, N]: the forward keeps h in registers,
// and the backward recomputes it (keeping at most one state per chunk of positions).
//
// Chunk states (training, CUDA): with `keep_chunk_states` the CUDA forward also returns
//   chunk_states[b, k, d, n] = h_{k·S − 1}[d, n]  (the initial state, or 0, at k = 0),
// S = scan_state_stride(dtype of u, N), f32 [batch, ⌈L / S⌉, D, N], the states its output pass walks
// through anyway (at S = 32 with N = 16 as many bytes as bf16 u itself). Given back to the backward
// as `ScanInputs::chunk_states`, they spare it the pass that recomputes them (a forward, or a
// summary of every chunk and a chain over them). The reference and the CPU backend return none
// and ignore them; positions past a sequence's length do not advance them, as everywhere.
#pragma once
#include "core/tensor.h"

namespace mamba::ops {

// Positions per chunk state (above): the CUDA backward's chunk, 32 for bf16 with N = 16 (the
// state-group backward restarts from a kept state every 32 positions), else 256 (the lane scans').
constexpr int64_t scan_state_stride(DType u_dtype, int64_t nstate) {
  return u_dtype == DType::bf16 && nstate == 16 ? 32 : 256;
}

struct ScanInputs {
  Tensor u;           // [batch, L, D]  f32 | bf16 | f64 (f64: reference only)
  Tensor delta;       // [batch, L, D]  dtype of u
  Tensor A;           // [D, N] f32 (negative)
  Tensor B;           // [batch, L, N]  dtype of u
  Tensor C;           // [batch, L, N]  dtype of u
  Tensor D;           // [D] f32, optional
  Tensor z;           // [batch, L, D] dtype of u, optional
  Tensor delta_bias;  // [D] f32, optional
  bool delta_softplus = false;
  Tensor initial_state;  // [batch, D, N] f32, optional
  Tensor lengths;        // [batch] i32, optional
  // Decode step only, optional: the delta projection W_δ [D, R], a weight (f32, bf16 or f16 with
  // either dtype of u; f64 for the reference). When given, `delta` is the low-rank input [batch, R]
  // and the step forms δ[d] = Σᵣ delta[r] · W_δ[d, r] itself, accumulating in f32 (Mamba-1's
  // dt_proj folded into the update: one kernel fewer per layer and decode step).
  Tensor delta_proj;
  // Forward only: also return ScanOutputs::chunk_states (CUDA; ignored elsewhere).
  bool keep_chunk_states = false;
  // Backward only, optional: the chunk_states a forward of these same inputs returned.
  Tensor chunk_states;
};

struct ScanOutputs {
  Tensor out;           // [batch, L, D], dtype of u
  Tensor last_state;    // [batch, D, N] f32
  Tensor chunk_states;  // [batch, ⌈L / scan_state_stride⌉, D, N] f32, or undefined (see above)
};

// Gradients of Σ out·dout (+ Σ last_state·dlast_state). Each is defined iff its input is;
// du, ddelta, dB, dC, dz have the dtype of u; dA, dD, ddelta_bias, dinitial_state are f32.
// Positions past a sequence's length get zero gradients. The CPU backend sums dA, dB, dC, dD and
// ddelta_bias in a fixed order, so they are bitwise reproducible at a fixed thread count.
struct ScanGrads {
  Tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state;
};

// Validate shapes/dtypes/devices/lengths (0 ≤ lengths[b] ≤ L; a CUDA `lengths` is copied to the host
// for this) with messages naming the tensor; every backend calls them at entry.
void check_scan_inputs(const ScanInputs& in);
void check_scan_backward_inputs(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state);
void check_step_inputs(const ScanInputs& step, const Tensor& state);

// Entry points: dispatch on the device of `u`.
ScanOutputs selective_scan_forward(const ScanInputs& in);
ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state = {});

// One decode step for a batch of sequences: u, delta, z: [batch, D] (delta [batch, R] with
// delta_proj); B, C: [batch, N]; state [batch, D, N] f32 is advanced in place; returns out
// [batch, D] (dtype of u).
// `in.lengths` and `in.initial_state` are ignored.
Tensor selective_state_update(const ScanInputs& step, Tensor& state);
// The same step with delta_proj, where the low-rank δ rows, B and C lie side by side in one
// delta_B_C [batch, R + 2N] (dtype of u), as x_proj's one product writes them; step.delta, B and C
// are not given. The CUDA update reads them in place (at batch > 1 splitting them is a copy kernel
// per layer in the decode chain); other backends take the pieces.
Tensor selective_state_update_packed(const ScanInputs& step, const Tensor& delta_B_C, Tensor& state);

namespace ref {  // float64 loops: the definition of correct. Outputs and gradients are f64.
ScanOutputs selective_scan_forward(const ScanInputs& in);
ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state = {});
Tensor selective_state_update(const ScanInputs& step, Tensor& state);  // state f64
}  // namespace ref

namespace cpu {
ScanOutputs selective_scan_forward(const ScanInputs& in);
ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state);
Tensor selective_state_update(const ScanInputs& step, Tensor& state);
}  // namespace cpu

namespace cuda {
ScanOutputs selective_scan_forward(const ScanInputs& in);
ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state);
Tensor selective_state_update(const ScanInputs& step, Tensor& state);
Tensor selective_state_update_packed(const ScanInputs& step, const Tensor& delta_B_C, Tensor& state);
}  // namespace cuda

}  // namespace mamba::ops

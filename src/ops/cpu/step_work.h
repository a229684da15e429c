// Decode-step ops of the CPU backend taken apart into their set-up (checks, outputs, the serial
// part) and their parallel part, so that ops/cpu/mixer_step.cpp can run several of them in one
// team run (core/threads.h). Each op's own entry point runs its parallel part as one pool run.
//
// The set-up only allocates the outputs: an input may be the output of an earlier piece of work
// that has not run yet, as long as it is filled before this work runs.
#pragma once
#include <functional>
#include <optional>
#include <vector>

#include "core/tensor.h"
#include "ops/in_projection_step.h"
#include "ops/selective_scan.h"

namespace mamba::ops::cpu {

// run(begin, end) over disjoint ranges that together cover [0, items), from any threads.
struct RangeWork {
  int64_t items = 0;
  int64_t chunk = 1;  // items per piece when the pieces go to whichever thread is free
  std::function<void(int64_t begin, int64_t end)> run;
};

// The in-projection of a decode step (ops/in_projection_step.h): the set-up runs the norm; the
// work is W_in's rows in chunks, those of the x half followed by their channels' conv step.
// nullopt when the streaming product does not take these inputs (more rows than decode has).
struct InProjectionWork {
  InProjectionOutputs out;
  RangeWork rows;
};
std::optional<InProjectionWork> prepare_in_projection_step(const InProjectionStep& in, Tensor& conv_state);

// out = x·Wᵀ + bias (ops/linear.h) with the streaming kernel, as column pieces [M, wᵢ] of their
// own (linear_forward_split's pieces); the work is W's rows in chunks. nullopt when gemm_x_wt
// would not take the streaming kernel for x's rows.
struct ProductWork {
  std::vector<Tensor> pieces;
  RangeWork rows;
};
std::optional<ProductWork> prepare_streaming_product(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                                     const std::vector<int64_t>& widths);

// The state update (selective_state_update; inputs already checked): the work is blocks of 16
// channels, meant as one range per thread (docs/perf/cpu_model.md v12).
struct StateUpdateWork {
  Tensor out;
  RangeWork blocks;
};
StateUpdateWork prepare_state_update(const ScanInputs& step, Tensor& state);

}  // namespace mamba::ops::cpu

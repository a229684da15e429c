// The memory floor of a decode step, measured on the machine at hand: how long all threads take
// to read a set of host buffers (a model's weights) once, doing nothing else with the bytes.
//
// Decode reads every weight once per token, so this time bounds a decode step from below. Shared
// machines change speed from minute to minute; a floor measured beside the benchmark, in the same
// run, is the fair yardstick (docs/perf/cpu_model.md).
#pragma once
#include <cstddef>
#include <span>
#include <vector>

namespace mamba {

// Seconds for one pass of all threads over every byte of `buffers` (host memory), the best of
// `passes` passes.
double seconds_to_read(const std::vector<std::span<const std::byte>>& buffers, int passes);

}  // namespace mamba

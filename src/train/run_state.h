// A training run's folder OUT, saved as one unit so that a kill at any moment leaves the last good
// checkpoint usable:
//   OUT/config.json, OUT/model.safetensors   the model, in Hugging Face format (loadable as is)
//   OUT/train_state.safetensors              optimiser moments, optimiser step, data Rng state
//   OUT/train_state.json                     scalars: step, the run's settings (for checks and people)
//
// Saving writes all four files into OUT/.staging (each one atomically: temp file, fsync, rename),
// then renames the folder to OUT/.commit — that rename is the commit point — then moves each file
// into OUT and removes OUT/.commit. recover_run() finishes a save that got past the commit point
// (moves what is left in .commit) and throws away one that did not (removes .staging), so the
// four files in OUT always describe one step after recovery.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "io/checkpoint.h"
#include "io/config.h"

namespace mamba::train {

struct TrainState {
  int64_t step = 0;           // optimiser steps completed
  uint64_t data_rng[4] = {};  // the data source's Rng state after that step
  io::TensorMap optimizer;    // Optimizer::state_dict()
  nlohmann::json info;        // settings recorded for resume checks (batch, seq_len, ...)
};

inline constexpr const char* kTrainStateTensors = "train_state.safetensors";
inline constexpr const char* kTrainStateJson = "train_state.json";

void save_run(const std::string& out_dir, const io::ModelConfig& config, const io::TensorMap& weights,
              const TrainState& state);
// Completes or discards an interrupted save (see above). Safe to call on any folder.
void recover_run(const std::string& out_dir);
// True when OUT holds a committed run (train_state.json present after recovery).
bool has_run(const std::string& out_dir);
// Reads train_state.{json,safetensors}; errors name the file and what is wrong.
TrainState load_train_state(const std::string& out_dir);

// fsyncs a folder so that renames inside it are durable.
void sync_directory(const std::string& dir);

}  // namespace mamba::train

// The training loop. Each step s = 1…steps:
//   zero gradients; for each of grad_accum micro-batches: forward + backward (gradients add up);
//   loss = mean of the micro-batch losses, gradients × 1/grad_accum; stop if the loss or the
//   gradient norm is not finite; clip to grad_clip (global norm); optimiser step at lr = schedule(s).
// Every eval_every steps (and at the end) the model is evaluated on the data's evaluation set;
// every save_every steps (and at the end, on Ctrl-C and at the time limit) the run is saved to OUT
// (see run_state.h). A resumed run restores weights, optimiser state and the data Rng, so its losses
// equal an uninterrupted run's bit for bit at the same thread count.
//
// Output: OUT/metrics.jsonl (metrics.h), OUT/loss.svg at the end, a progress line on stderr
// (rewritten in place with \r on a terminal, else one line every log_every steps).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "model/language_model.h"
#include "train/data.h"
#include "train/optimizer.h"

namespace mamba::train {

struct TrainOptions {
  std::string out_dir;
  int64_t steps = 1000;
  int64_t batch = 8;
  int64_t grad_accum = 1;
  LrSchedule schedule;     // total_steps is set from `steps`
  double grad_clip = 1.0;  // 0: off
  OptimizerOptions optimizer;
  int64_t eval_every = 0;    // 0: only at the end
  int64_t eval_batches = 0;  // 0: the whole evaluation set
  int64_t save_every = 0;    // 0: only at the end
  double time_limit_s = 0;   // 0: none
  int64_t log_every = 10;    // progress lines when stderr is not a terminal
  bool resume = false;       // continue the run saved in out_dir (the model must be loaded from it)
  std::string dump_grads;    // file: the first step's gradients as grad.<name> f32
  nlohmann::json settings;   // recorded in train_state.json (flags, data description)
  bool quiet = false;        // no progress line (tests)
};

struct EvalResult {
  double loss = 0;  // mean nats per scored target
  int64_t count = 0;
  std::optional<double> accuracy;        // tasks
  std::optional<double> bits_per_byte;   // byte data, or text with a known bytes-per-token ratio
  std::optional<double> bits_per_token;  // token data
  nlohmann::json to_json() const;        // {"loss", "perplexity", "count", ...}
};

EvalResult evaluate(model::LanguageModel& model, const DataSource& data, int64_t batch, int64_t max_batches);

struct TrainResult {
  int64_t first_step = 1;  // the first step this call ran (later than 1 when resumed)
  int64_t last_step = 0;   // the last completed step
  double last_loss = 0;
  std::optional<EvalResult> final_eval;
  std::string stop_reason;  // "finished", "interrupted", "time limit"
};

// Runs (or resumes) a training run. The model's parameters must be float32 on the CPU. Throws
// mamba::Error on a non-finite loss, leaving OUT's last checkpoint as it was.
TrainResult train(model::LanguageModel& model, DataSource& data, const TrainOptions& options);

}  // namespace mamba::train

// `mambacpp train`: trains a Mamba language model from scratch (--preset or explicit sizes), from
// --init weights, or continues a run (--resume), on a file (--data), a synthetic task (--task) or
// one fixed batch (--fixed-batch). See docs/training.md.
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/data_options.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/language_model.h"
#include "model/presets.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/run_state.h"
#include "train/trainer.h"

namespace mamba::cli {
namespace {

struct TrainFlags {
  CommonOptions common;
  std::string preset;
  int64_t d_model = 0, n_layer = 0, d_state = 0, d_conv = 0, expand = 0, vocab = 0;
  std::string init_dir;
  DataFlags data;
  std::string out_dir;
  int64_t steps = 1000, batch = 8, seq_len = 256, grad_accum = 1, warmup = 0;
  double lr = 1e-3, min_lr = 0, weight_decay = 0.1, grad_clip = 1.0, adam_eps = 1e-8, momentum = 0;
  std::string schedule = "cosine", optimizer = "adamw", adam_betas = "0.9,0.95";
  uint64_t seed = 0;
  int64_t eval_every = 0, eval_batches = 20, save_every = 0;
  double val_fraction = 0.05, time_limit = 0;
  bool resume = false, no_selection = false, no_graph = false;
  std::string fixed_batch, dump_grads;
  // Which of the defaulted flags the user gave (for conflicts and overrides).
  CLI::Option* seq_len_option = nullptr;
  CLI::Option* batch_option = nullptr;
  CLI::Option* eval_batches_option = nullptr;
};

std::pair<double, double> parse_betas(const std::string& text) {
  double b1 = 0, b2 = 0;
  char tail = 0;
  MAMBA_CHECK(std::sscanf(text.c_str(), "%lf,%lf%c", &b1, &b2, &tail) == 2,
              "--adam-betas: expected two numbers 'b1,b2' (e.g. 0.9,0.95), got '", text, "'");
  return {b1, b2};
}

// The model configuration of a fresh run: preset, overridden by explicit sizes.
io::ModelConfig fresh_config(const TrainFlags& f, int64_t data_vocab) {
  io::ModelConfig c = model::preset_config(f.preset.empty() ? "tiny" : f.preset, "--preset");
  if (f.d_model) c.d_model = f.d_model;
  if (f.n_layer) c.n_layer = f.n_layer;
  c.d_state = f.d_state ? f.d_state : c.d_state;
  c.d_conv = f.d_conv ? f.d_conv : c.d_conv;
  c.expand = f.expand ? f.expand : c.expand;
  if (f.vocab || data_vocab) c.vocab_size = f.vocab ? f.vocab : data_vocab;
  MAMBA_CHECK(c.vocab_size > 0, "--vocab: required for --data-format ", f.data.format,
              " (the vocabulary size of the token ids)");
  MAMBA_CHECK(c.d_model > 0 && c.n_layer > 0 && c.d_state > 0 && c.d_conv > 0 && c.expand > 0,
              "--d-model/--n-layer/--d-state/--d-conv/--expand: sizes must be positive");
  c.d_inner = c.expand * c.d_model;
  c.dt_rank = (c.d_model + 15) / 16;
  c.no_selection = f.no_selection;
  c.validate("the train flags (--preset and sizes)");
  return c;
}

// The vocabulary the data itself defines (0 when it takes the model's).
int64_t data_vocab(const TrainFlags& f, const tokenizer::Tokenizer* text_tokenizer) {
  if (!f.data.task.empty()) return f.data.task_vocab;
  if (text_tokenizer) return text_tokenizer->size();
  if (!f.data.path.empty() && f.data.format == "bytes") return 256;
  return 0;
}

// Checks the data flags before any model is built, so their errors come first.
void check_data_flags(const TrainFlags& f) {
  int sources = !f.data.path.empty() + !f.data.task.empty() + !f.fixed_batch.empty();
  MAMBA_CHECK(sources == 1, "train: give exactly one of --data, --task and --fixed-batch");
  MAMBA_CHECK(f.data.format == "bytes" || f.data.format == "tokens" || f.data.format == "text",
              "--data-format: unknown format '", f.data.format, "' (expected bytes, tokens or text)");
  if (!f.data.task.empty()) {
    train::task_kind_from_name(f.data.task, "--task");
    MAMBA_CHECK(f.seq_len_option->count() == 0, "--seq-len: does not apply to --task (the length is --task-len)");
  }
  MAMBA_CHECK(f.data.format != "text" || f.data.path.empty() || !f.data.tokenizer.empty(),
              "--tokenizer: required with --data-format text (a tokenizer.json, its folder, or 'bytes')");
}

std::unique_ptr<train::DataSource> make_data(const TrainFlags& f, int64_t model_vocab,
                                             const tokenizer::Tokenizer* text_tokenizer) {
  if (!f.fixed_batch.empty()) {
    io::SafetensorsFile file = io::read_safetensors(f.fixed_batch);
    auto ids = file.tensors.find("input_ids");
    MAMBA_CHECK(ids != file.tensors.end(), "--fixed-batch '", f.fixed_batch, "': no tensor named input_ids");
    return train::make_fixed_batch_source(ids->second, model_vocab, "--fixed-batch '" + f.fixed_batch + "'");
  }
  if (!f.data.task.empty()) {
    return train::make_task_source(task_options(f.data, f.seed));
  }
  train::StreamOptions stream{f.seq_len, f.val_fraction, f.seed};
  if (text_tokenizer)
    return train::make_text_source(
        f.data.path, [text_tokenizer](const std::string& text) { return text_tokenizer->encode(text); }, model_vocab,
        stream);
  std::string what = "--data '" + f.data.path + "'";
  if (f.data.format == "bytes")
    return train::make_stream_source(train::read_byte_tokens(f.data.path), 256, train::Metric::bits_per_byte, 1.0,
                                     stream, what);
  if (f.data.format == "tokens")
    return train::make_stream_source(train::read_token_file(f.data.path, f.data.token_bytes, model_vocab), model_vocab,
                                     train::Metric::bits_per_token, 0.0, stream, what);
  if (f.data.format == "text")
    fail(
        "--data-format text: the tokenizer is not wired into train yet; tokenize first (mambacpp tokenize) and use "
        "--data-format tokens");
  fail("--data-format: unknown format '", f.data.format, "' (expected bytes, tokens or text)");
}

void run_train(TrainFlags& f) {
  apply_common_options(f.common);
  MAMBA_CHECK(!f.out_dir.empty(), "--out: required (the folder for checkpoints and metrics)");
  MAMBA_CHECK(!(f.resume && !f.init_dir.empty()),
              "--init: cannot be combined with --resume (the run's weights are in --out)");
  auto [beta1, beta2] = parse_betas(f.adam_betas);
  check_data_flags(f);
  std::unique_ptr<tokenizer::Tokenizer> text_tokenizer;
  if (f.data.format == "text" && !f.data.path.empty()) text_tokenizer = tokenizer::load_tokenizer(f.data.tokenizer);

  model::LoadOptions load;
  load.device = load_options(f.common).device;
  // --dtype bf16: mixed precision (float32 master weights, bf16 products), a GPU feature.
  const bool mixed_precision = f.common.dtype == "bf16";
  MAMBA_CHECK(!mixed_precision || load.device == Device::cuda,
              "--dtype bf16: mixed-precision training runs on CUDA only; on the CPU train in f32 (drop --dtype)");
  load.weight_dtype = DType::f32;
  load.keep_stored_dtype = false;
  std::unique_ptr<model::LanguageModel> model;
  if (f.resume) {
    train::recover_run(f.out_dir);
    MAMBA_CHECK(train::has_run(f.out_dir), "--resume: no training run in --out '", f.out_dir, "'");
    model = model::LanguageModel::load(f.out_dir, load);
  } else if (!f.init_dir.empty()) {
    model = model::LanguageModel::load(f.init_dir, load);
    MAMBA_CHECK(!f.no_selection || model->config().no_selection,
                "--no-selection: the model in --init was built with selection; it cannot be switched off after");
  } else {
    model = model::LanguageModel::initialize(fresh_config(f, data_vocab(f, text_tokenizer.get())), f.seed, load.device);
  }
  if (mixed_precision) model->use_mixed_precision();
  model->set_training_recording(!f.no_graph);
  std::unique_ptr<train::DataSource> data = make_data(f, model->config().vocab_size, text_tokenizer.get());
  if (!f.fixed_batch.empty()) {
    int64_t rows = data->eval_batches(1, 0)[0].ids.size(0);
    MAMBA_CHECK(f.batch_option->count() == 0 || f.batch == rows, "--batch ", f.batch, ": the fixed batch has ", rows,
                " rows (--fixed-batch sets the batch size)");
    f.batch = rows;
  }

  train::TrainOptions o;
  o.out_dir = f.out_dir;
  o.steps = f.steps;
  o.batch = f.batch;
  o.grad_accum = f.grad_accum;
  o.schedule.kind = train::schedule_kind_from_name(f.schedule, "--schedule");
  o.schedule.lr = f.lr;
  o.schedule.min_lr = f.min_lr;
  o.schedule.warmup = f.warmup;
  o.grad_clip = f.grad_clip;
  o.optimizer.kind = train::optimizer_kind_from_name(f.optimizer, "--optimizer");
  o.optimizer.beta1 = beta1;
  o.optimizer.beta2 = beta2;
  o.optimizer.eps = f.adam_eps;
  o.optimizer.weight_decay = f.weight_decay;
  o.optimizer.momentum = f.momentum;
  o.eval_every = f.eval_every;
  // A task's evaluation set is its fixed 1024 sequences, all of them unless asked otherwise.
  o.eval_batches = !f.data.task.empty() && f.eval_batches_option->count() == 0 ? 0 : f.eval_batches;
  o.save_every = f.save_every;
  o.time_limit_s = f.time_limit;
  o.resume = f.resume;
  o.dump_grads = f.dump_grads;
  o.settings = {{"lr", f.lr},
                {"min_lr", f.min_lr},
                {"schedule", f.schedule},
                {"warmup", f.warmup},
                {"weight_decay", f.weight_decay},
                {"grad_clip", f.grad_clip},
                {"adam_betas", f.adam_betas},
                {"adam_eps", f.adam_eps},
                {"seed", f.seed},
                {"steps", f.steps}};

  std::fprintf(stderr, "model: %lld parameters (d_model %lld, %lld layers, vocab %lld%s)\ndata: %s\n",
               (long long)model->parameter_count(), (long long)model->config().d_model,
               (long long)model->config().n_layer, (long long)model->config().vocab_size,
               model->config().no_selection ? ", no selection" : "", data->describe().c_str());
  train::TrainResult result = train::train(*model, *data, o);
  std::string summary = "done: step " + std::to_string(result.last_step) + " (" + result.stop_reason + ")";
  if (result.final_eval) summary += ", eval " + result.final_eval->to_json().dump();
  std::fprintf(stderr, "%s\ncheckpoint: %s (metrics.jsonl, loss.svg)\n", summary.c_str(), f.out_dir.c_str());
}

CommandRegistration registration(60, [](CLI::App& app) {
  auto flags = std::make_shared<TrainFlags>();
  TrainFlags& f = *flags;
  CLI::App* cmd =
      app.add_subcommand("train", "Train a Mamba language model (on the GPU when one is present, else the CPU)");
  add_common_options(*cmd, f.common);
  cmd->add_option("--preset", f.preset, "Model shape: tiny | 130m | 370m | 790m | 1.4b | 2.8b (default tiny)");
  cmd->add_option("--d-model", f.d_model, "Model width (overrides the preset)");
  cmd->add_option("--n-layer", f.n_layer, "Number of layers");
  cmd->add_option("--d-state", f.d_state, "SSM state size N (default 16)");
  cmd->add_option("--d-conv", f.d_conv, "Convolution width (default 4)");
  cmd->add_option("--expand", f.expand, "Inner width factor (default 2)");
  cmd->add_option("--vocab", f.vocab, "Vocabulary size (default: from the data or the preset)");
  cmd->add_option("--init", f.init_dir, "Start from the weights in this checkpoint folder");
  add_data_options(*cmd, f.data, "Training data file",
                   "Tokenizer for --data-format text: tokenizer.json, its folder, or bytes");
  cmd->add_option("--out", f.out_dir, "Output folder (checkpoint, metrics.jsonl, loss.svg)");
  cmd->add_option("--steps", f.steps, "Optimiser steps (default 1000)");
  f.batch_option = cmd->add_option("--batch", f.batch, "Sequences per micro-batch (default 8)");
  f.seq_len_option = cmd->add_option("--seq-len", f.seq_len, "Tokens per sequence (default 256)");
  cmd->add_option("--grad-accum", f.grad_accum, "Micro-batches per step (default 1)");
  cmd->add_option("--lr", f.lr, "Peak learning rate (default 1e-3)");
  cmd->add_option("--min-lr", f.min_lr, "Cosine floor (default 0)");
  cmd->add_option("--schedule", f.schedule, "constant | cosine (default cosine)");
  cmd->add_option("--warmup", f.warmup, "Linear warmup steps (default 0)");
  cmd->add_option("--weight-decay", f.weight_decay, "Decoupled weight decay (default 0.1)");
  cmd->add_option("--grad-clip", f.grad_clip, "Global gradient norm limit, 0 = off (default 1)");
  cmd->add_option("--optimizer", f.optimizer, "adamw | sgd (default adamw)");
  cmd->add_option("--adam-betas", f.adam_betas, "AdamW betas 'b1,b2' (default 0.9,0.95)");
  cmd->add_option("--adam-eps", f.adam_eps, "AdamW epsilon (default 1e-8)");
  cmd->add_option("--momentum", f.momentum, "SGD momentum (default 0)");
  cmd->add_option("--seed", f.seed, "Seed of initialisation and data order (default 0)");
  cmd->add_option("--eval-every", f.eval_every, "Evaluate every N steps, 0 = only at the end (default 0)");
  f.eval_batches_option =
      cmd->add_option("--eval-batches", f.eval_batches,
                      "Evaluation batches, 0 = the whole set (default 20; tasks: all 1024 sequences)");
  cmd->add_option("--val-fraction", f.val_fraction, "Last fraction of the data held out (default 0.05)");
  cmd->add_option("--save-every", f.save_every, "Save every N steps, 0 = only at the end (default 0)");
  cmd->add_option("--time-limit", f.time_limit, "Stop, save and evaluate after this many seconds");
  cmd->add_flag("--resume", f.resume, "Continue the run saved in --out");
  cmd->add_flag("--no-selection", f.no_selection, "LTI ablation: Δ, B, C independent of the input");
  cmd->add_flag("--no-graph", f.no_graph,
                "CUDA: run every training pass eagerly instead of replaying it from a CUDA graph");
  cmd->add_option("--fixed-batch", f.fixed_batch, "safetensors file with input_ids [B, L]: the batch of every step");
  cmd->add_option("--dump-grads", f.dump_grads, "Write the first step's gradients (grad.<name>) to this file");
  cmd->callback([flags] { run_train(*flags); });
});

}  // namespace
}  // namespace mamba::cli

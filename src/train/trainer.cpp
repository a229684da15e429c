#include "train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <numbers>
#include <vector>

#include "core/error.h"
#include "core/timer.h"
#include "io/safetensors.h"
#include "train/metrics.h"
#include "train/run_state.h"

namespace mamba::train {

namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) {
  g_interrupted = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program at once
}

// Installs the Ctrl-C handler for the duration of a run and restores the previous one after.
class SigintGuard {
 public:
  SigintGuard() {
    g_interrupted = false;
    previous_ = std::signal(SIGINT, on_sigint);
  }
  ~SigintGuard() { std::signal(SIGINT, previous_); }

 private:
  void (*previous_)(int) = SIG_DFL;
};

std::string duration_text(double seconds) {
  char buf[32];
  long s = long(seconds + 0.5);
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

class Progress {
 public:
  Progress(bool quiet, int64_t log_every) : quiet_(quiet), log_every_(log_every), tty_(::isatty(2) != 0) {}
  void step(int64_t step, int64_t steps, double loss, double lr, double tokens_per_s, double eta_s) {
    if (quiet_) return;
    char line[160];
    std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  lr %.3g  %.0f tok/s  ETA %s", (long long)step,
                  (long long)steps, loss, lr, tokens_per_s, duration_text(eta_s).c_str());
    if (tty_) {
      std::fprintf(stderr, "\r%s\x1b[K", line);
      open_line_ = true;
    } else if (step % log_every_ == 0 || step == steps) {
      std::fprintf(stderr, "%s\n", line);
    }
    std::fflush(stderr);
  }
  void message(const std::string& text) {
    if (quiet_) return;
    end_line();
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
  }
  void end_line() {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
  }

 private:
  bool quiet_;
  int64_t log_every_;
  bool tty_;
  bool open_line_ = false;
};

void validate(const TrainOptions& o, const model::LanguageModel& model, const DataSource& data) {
  MAMBA_CHECK(!o.out_dir.empty(), "--out: a folder is required");
  MAMBA_CHECK(o.steps >= 1, "--steps: must be at least 1, got ", o.steps);
  MAMBA_CHECK(o.batch >= 1, "--batch: must be at least 1, got ", o.batch);
  MAMBA_CHECK(o.grad_accum >= 1, "--grad-accum: must be at least 1, got ", o.grad_accum);
  MAMBA_CHECK(o.grad_clip >= 0, "--grad-clip: must be non-negative (0 turns clipping off), got ", o.grad_clip);
  MAMBA_CHECK(o.eval_every >= 0, "--eval-every: must be non-negative, got ", o.eval_every);
  MAMBA_CHECK(o.eval_batches >= 0, "--eval-batches: must be non-negative, got ", o.eval_batches);
  MAMBA_CHECK(o.save_every >= 0, "--save-every: must be non-negative, got ", o.save_every);
  MAMBA_CHECK(o.time_limit_s >= 0, "--time-limit: must be non-negative, got ", o.time_limit_s);
  MAMBA_CHECK(o.schedule.lr > 0 && std::isfinite(o.schedule.lr), "--lr: must be positive, got ", o.schedule.lr);
  MAMBA_CHECK(o.schedule.min_lr >= 0 && o.schedule.min_lr <= o.schedule.lr, "--min-lr: must lie in [0, --lr], got ",
              o.schedule.min_lr);
  MAMBA_CHECK(o.schedule.warmup >= 0, "--warmup: must be non-negative, got ", o.schedule.warmup);
  MAMBA_CHECK(o.log_every >= 1, "progress interval must be at least 1");
  MAMBA_CHECK(data.vocab() <= model.vocab_rows(), "the data uses ids up to ", data.vocab() - 1, " but the model has ",
              model.vocab_rows(), " embedding rows (set --vocab to at least ", data.vocab(), ")");
}

// Settings that must not change across a resume, or the continued run would not be the same run.
const char* const kResumeKeys[] = {"batch", "grad_accum", "seq_len", "data", "optimizer"};

void check_resumable(const nlohmann::json& saved, const nlohmann::json& now, const std::string& out_dir) {
  for (const char* key : kResumeKeys) {
    if (!saved.contains(key) || !now.contains(key)) continue;
    MAMBA_CHECK(saved[key] == now[key], "--resume: the run in '", out_dir, "' was started with ", key, " = ",
                saved[key].dump(), ", now ", now[key].dump(), " (continue with the same setting)");
  }
}

void dump_gradients(const std::string& path, const std::vector<model::Parameter>& params) {
  io::TensorMap grads;
  for (const model::Parameter& p : params) grads["grad." + p.name] = on_host(p.grad);
  io::write_safetensors(path, grads);
}

}  // namespace

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = {{"loss", loss}, {"perplexity", std::exp(loss)}, {"count", count}};
  if (accuracy) j["accuracy"] = *accuracy;
  if (bits_per_byte) j["bits_per_byte"] = *bits_per_byte;
  if (bits_per_token) j["bits_per_token"] = *bits_per_token;
  return j;
}

EvalResult evaluate(model::LanguageModel& model, const DataSource& data, int64_t batch, int64_t max_batches) {
  double total = 0;
  EvalResult result;
  AccuracyCount correct;
  for (const Batch& b : data.eval_batches(batch, max_batches)) {
    model::LossResult r = model.forward_backward(b.ids, b.targets, /*with_grad=*/false);
    const int64_t count = r.loss.count();
    total += r.loss.mean() * double(count);
    result.count += count;
    if (data.metric() == Metric::accuracy) {
      AccuracyCount c = count_correct(r.predictions, b.targets);
      correct.correct += c.correct;
      correct.total += c.total;
    }
  }
  MAMBA_CHECK(result.count > 0, "evaluation: ", data.describe(), " has no scored targets");
  result.loss = total / double(result.count);
  double bits = result.loss / std::numbers::ln2;
  switch (data.metric()) {
    case Metric::accuracy:
      result.accuracy = double(correct.correct) / double(correct.total);
      break;
    case Metric::bits_per_byte:
      result.bits_per_byte = bits;
      break;
    case Metric::bits_per_token:
      result.bits_per_token = bits;
      if (data.bytes_per_token() > 0) result.bits_per_byte = bits / data.bytes_per_token();
      break;
  }
  return result;
}

TrainResult train(model::LanguageModel& model, DataSource& data, const TrainOptions& options) {
  validate(options, model, data);
  namespace fs = std::filesystem;
  const std::string& out = options.out_dir;
  LrSchedule schedule = options.schedule;
  schedule.total_steps = options.steps;
  nlohmann::json settings = options.settings;
  settings["batch"] = options.batch;
  settings["grad_accum"] = options.grad_accum;
  settings["seq_len"] = data.seq_len();
  settings["data"] = data.describe();
  settings["optimizer"] = options.optimizer.kind == OptimizerKind::adamw ? "adamw" : "sgd";

  model.enable_grad();
  std::vector<model::Parameter>& params = model.parameters();
  Optimizer optimizer(options.optimizer, params);
  TrainResult result;
  recover_run(out);
  if (options.resume) {
    TrainState state = load_train_state(out);
    check_resumable(state.info, settings, out);
    optimizer.load_state_dict(state.optimizer, out + "/" + kTrainStateTensors);
    MAMBA_CHECK(optimizer.steps() == state.step, "--resume: optimiser state in '", out, "' is at step ",
                optimizer.steps(), " but train_state.json at ", state.step);
    data.set_rng_state(state.data_rng);
    result.first_step = state.step + 1;
  } else {
    MAMBA_CHECK(!has_run(out), "--out '", out,
                "' already holds a training run: pass --resume to continue it, or choose another folder");
    std::error_code ec;
    fs::create_directories(out, ec);
    MAMBA_CHECK(!ec, "--out '", out, "': cannot create the folder: ", ec.message());
  }
  result.last_step = result.first_step - 1;
  MetricsLog metrics(out + "/metrics.jsonl", options.resume ? result.last_step : -1);
  Progress progress(options.quiet, options.log_every);
  SigintGuard sigint;

  auto save = [&](int64_t step) {
    TrainState state;
    state.step = step;
    data.get_rng_state(state.data_rng);
    state.optimizer = optimizer.state_dict();
    state.info = settings;
    save_run(out, model.config(), model.state_dict(), state);
  };
  int64_t last_eval_step = -1;
  auto run_eval = [&](int64_t step) {
    EvalResult e = evaluate(model, data, options.batch, options.eval_batches);
    nlohmann::json record = e.to_json();
    record["eval"] = true;
    record["step"] = step;
    metrics.write(record);
    progress.message("eval at step " + std::to_string(step) + ": " + e.to_json().dump());
    last_eval_step = step;
    result.final_eval = e;
  };

  const int64_t tokens_per_step = options.batch * options.grad_accum * data.seq_len();
  Timer run_timer;
  int64_t last_saved = result.last_step;
  result.stop_reason = "finished";
  if (result.first_step > options.steps) progress.message("the run in '" + out + "' already reached --steps");
  for (int64_t step = result.first_step; step <= options.steps; ++step) {
    Timer step_timer;
    double lr = schedule.at(step);
    // A single micro-batch writes the products' gradients instead of adding them to zeros.
    model.zero_grad(/*next_pass_overwrites=*/options.grad_accum == 1);
    // The losses are read once every micro-batch is queued: the GPU runs them without a break.
    std::vector<ops::LossTotals> losses;
    for (int64_t micro = 0; micro < options.grad_accum; ++micro) {
      Batch batch = data.train_batch(options.batch);
      losses.push_back(model.forward_backward(batch.ids, batch.targets, /*with_grad=*/true).loss);
    }
    double loss = 0;
    for (const ops::LossTotals& l : losses) loss += l.mean();
    loss /= double(options.grad_accum);
    if (options.grad_accum > 1) scale_gradients(params, 1.0 / double(options.grad_accum));
    if (step == 1 && !options.dump_grads.empty()) dump_gradients(options.dump_grads, params);
    // A value that is not finite stops the run before any update (a gradient norm that is not finite
    // made the optimiser skip its update).
    auto stop = [&](const char* what, double value, const nlohmann::json& grad_norm) {
      metrics.write({{"step", step}, {"loss", loss}, {"grad_norm", grad_norm}, {"lr", lr}});
      progress.end_line();
      fail("step ", step, ": the ", what, " is ", value, "; training stopped. The last good checkpoint in '", out,
           "' (step ", last_saved, ") is kept. Try a lower --lr, --grad-clip 1 or a longer --warmup.");
    };
    if (!std::isfinite(loss)) stop("loss", loss, nullptr);
    double grad_norm = optimizer.step(params, lr, options.grad_clip);
    if (!std::isfinite(grad_norm)) stop("gradient norm", grad_norm, grad_norm);
    model.parameters_changed(/*compute_copies_current=*/true);
    double seconds = step_timer.seconds();
    double tokens_per_s = double(tokens_per_step) / std::max(seconds, 1e-9);
    metrics.write({{"step", step},
                   {"loss", loss},
                   {"lr", lr},
                   {"grad_norm", grad_norm},
                   {"tokens_per_s", tokens_per_s},
                   {"elapsed_s", run_timer.seconds()}});
    result.last_step = step;
    result.last_loss = loss;
    int64_t done = step - result.first_step + 1;
    double eta = run_timer.seconds() / double(done) * double(options.steps - step);
    progress.step(step, options.steps, loss, lr, tokens_per_s, eta);

    bool time_up = options.time_limit_s > 0 && run_timer.seconds() >= options.time_limit_s;
    if (g_interrupted || time_up) {
      result.stop_reason = g_interrupted ? "interrupted" : "time limit";
      break;
    }
    if (options.eval_every > 0 && step % options.eval_every == 0) run_eval(step);
    if (options.save_every > 0 && step % options.save_every == 0 && step < options.steps) {
      save(step);
      last_saved = step;
    }
  }
  progress.end_line();
  if (result.last_step > last_saved) {
    save(result.last_step);
    progress.message("saved step " + std::to_string(result.last_step) + " to " + out);
  }
  bool stepped = result.last_step >= result.first_step;
  if (result.stop_reason != "interrupted" && last_eval_step != result.last_step && stepped) run_eval(result.last_step);
  write_loss_plot(metrics.path(), out + "/loss.svg", "mambacpp train: " + data.describe());
  if (result.stop_reason != "finished")
    progress.message("stopped (" + result.stop_reason + ") at step " + std::to_string(result.last_step));
  return result;
}

}  // namespace mamba::train

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/safetensors.h"
#include "temp_dir.h"
#include "train/metrics.h"
#include "train/run_state.h"
#include "train/trainer.h"

namespace mamba::train {
namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

io::ModelConfig tiny_config(int64_t vocab) {
  io::ModelConfig c;
  c.d_model = 16;
  c.n_layer = 2;
  c.vocab_size = vocab;
  c.d_state = 4;
  c.d_conv = 4;
  c.expand = 2;
  c.d_inner = 32;
  c.dt_rank = 1;
  return c;
}

std::unique_ptr<model::LanguageModel> tiny_model(int64_t vocab, uint64_t seed = 1) {
  return model::LanguageModel::initialize(tiny_config(vocab), seed, Device::cpu);
}

model::LoadOptions f32_on_cpu() {
  model::LoadOptions load;
  load.keep_stored_dtype = false;
  return load;
}

// Induction-heads batches drawn from the source's own Rng (so resume restores them), raising
// SIGINT while the `interrupt_at`-th training batch is drawn (as Ctrl-C would).
class InterruptingTask final : public DataSource {
 public:
  explicit InterruptingTask(int64_t interrupt_at) : DataSource(5), interrupt_at_(interrupt_at) {}
  std::string describe() const override { return "test task"; }
  int64_t vocab() const override { return task_.vocab; }
  int64_t seq_len() const override { return task_.length; }
  Metric metric() const override { return Metric::accuracy; }
  Batch train_batch(int64_t batch) override {
    if (++drawn_ == interrupt_at_) std::raise(SIGINT);
    return generate(batch, rng_);
  }
  std::vector<Batch> eval_batches(int64_t batch, int64_t) const override {
    Rng rng(77);
    return {generate(batch, rng)};
  }

 private:
  Batch generate(int64_t batch, Rng& rng) const {
    Batch b{Tensor::empty({batch, task_.length}, DType::i32), Tensor::empty({batch, task_.length}, DType::i32)};
    for (int64_t i = 0; i < batch; ++i)
      generate_task_sequence(task_, rng, b.ids.data<int32_t>() + i * task_.length,
                             b.targets.data<int32_t>() + i * task_.length);
    return b;
  }
  TaskOptions task_{TaskKind::induction_heads, 12, 0, 8, 0};
  int64_t interrupt_at_;
  int64_t drawn_ = 0;
};

TrainOptions small_run(const std::string& out, int64_t steps) {
  TrainOptions o;
  o.out_dir = out;
  o.steps = steps;
  o.batch = 3;
  o.grad_accum = 2;
  o.schedule = {ScheduleKind::cosine, 5e-3, 1e-4, 2, steps};
  o.grad_clip = 0.5;
  o.eval_every = 4;
  o.save_every = 3;
  o.quiet = true;
  return o;
}

std::vector<nlohmann::json> step_records(const std::string& out) {
  std::vector<nlohmann::json> steps;
  for (const nlohmann::json& r : read_metrics(out + "/metrics.jsonl"))
    if (!r.value("eval", false)) steps.push_back(r);
  return steps;
}

TEST(RunState, UnfinishedSaveIsDiscardedAndCommittedSaveCompleted) {
  TempDir dir;
  std::string out = dir.file("run");
  fs::create_directories(out);
  for (const char* f : {"config.json", "model.safetensors", "train_state.safetensors", "train_state.json"})
    std::ofstream(out + "/" + f) << "old " << f;
  // Killed before the commit: the staging folder is thrown away, the old files stay.
  fs::create_directories(out + "/.staging");
  std::ofstream(out + "/.staging/model.safetensors") << "new half-written";
  recover_run(out);
  EXPECT_FALSE(fs::exists(out + "/.staging"));
  EXPECT_EQ(read_file(out + "/model.safetensors"), "old model.safetensors");
  // Killed after the commit, with one file already moved: recovery moves the rest.
  fs::create_directories(out + "/.commit");
  std::ofstream(out + "/model.safetensors") << "new model.safetensors";
  for (const char* f : {"config.json", "train_state.safetensors", "train_state.json"})
    std::ofstream(out + "/.commit/" + f) << "new " << f;
  recover_run(out);
  EXPECT_FALSE(fs::exists(out + "/.commit"));
  for (const char* f : {"config.json", "model.safetensors", "train_state.safetensors", "train_state.json"})
    EXPECT_EQ(read_file(out + "/" + f), std::string("new ") + f);
}

TEST(RunState, KilledAtAnyMomentLeavesOneConsistentCheckpoint) {
  TempDir dir;
  std::string out = dir.file("run");
  auto model = tiny_model(8);
  io::TensorMap weights = model->state_dict();
  auto state_at = [](int64_t step) {
    TrainState state;
    state.step = step;
    state.data_rng[0] = 0xFFFFFFFFFFFFFFF0ull + uint64_t(step);  // the top bit survives the i64 tensor
    state.optimizer["step"] = Tensor::from_vector({double(step)}, {1}, DType::i64);
    state.info = {{"batch", 4}};
    return state;
  };
  save_run(out, model->config(), weights, state_at(1));
  int64_t last = 1;
  for (int delay_us : {0, 5000, 20000, 45000, 80000}) {
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // saves later and later steps until killed
      for (int64_t step = last + 1;; ++step) save_run(out, model->config(), weights, state_at(step));
    }
    ::usleep(useconds_t(delay_us));
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    recover_run(out);
    TrainState loaded = load_train_state(out);  // checks json and tensors agree
    EXPECT_GE(loaded.step, last);
    EXPECT_EQ(loaded.data_rng[0], 0xFFFFFFFFFFFFFFF0ull + uint64_t(loaded.step));
    EXPECT_EQ(loaded.info["batch"], 4);
    EXPECT_EQ(io::read_safetensors(out + "/model.safetensors").metadata.at("step"), std::to_string(loaded.step));
    EXPECT_FALSE(fs::exists(out + "/.staging") || fs::exists(out + "/.commit"));
    last = loaded.step;
  }
}

TEST(MetricsLog, OneObjectPerLineAndResumeDropsLaterSteps) {
  TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path, -1);
    for (int step = 1; step <= 5; ++step) log.write({{"step", step}, {"loss", 1.0 / (3.0 * step)}});
    log.write({{"eval", true}, {"step", 4}, {"loss", 0.1}});
  }
  std::vector<nlohmann::json> all = read_metrics(path);
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all[2]["loss"].get<double>(), 1.0 / 9.0);          // exact round trip of the double
  std::ofstream(path, std::ios::app) << "{\"step\": 6, \"lo";  // a line cut by a kill
  {
    MetricsLog resumed(path, 3);
    resumed.write({{"step", 4}, {"loss", 2.0}});
  }
  all = read_metrics(path);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[3]["loss"], 2.0);
  EXPECT_EQ(all[2]["step"], 3);
}

TEST(LossPlot, SvgHasBothCurvesAxesAndLabels) {
  std::vector<CurvePoint> train, eval;
  for (int s = 1; s <= 50; ++s) train.push_back({double(s), 3.0 / s + 0.5});
  eval = {{10, 0.9}, {50, 0.6}};
  std::string svg = loss_curve_svg(train, eval, "bytes <a&b>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  size_t first = svg.find("<polyline");
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(svg.find("<polyline", first + 1), std::string::npos);
  EXPECT_NE(svg.find(">step<"), std::string::npos);
  EXPECT_NE(svg.find("loss (nats/token)"), std::string::npos);
  EXPECT_NE(svg.find("bytes &lt;a&amp;b&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_NE(loss_curve_svg({}, {}, "empty").find("</svg>"), std::string::npos);
}

// The tests below run end to end through LanguageModel.

TEST(Trainer, WritesMetricsCheckpointAndPlot) {
  TempDir dir;
  std::string out = dir.file("run");
  auto model = tiny_model(8);
  InterruptingTask data(-1);
  TrainResult result = train(*model, data, small_run(out, 6));
  EXPECT_EQ(result.last_step, 6);
  EXPECT_EQ(result.stop_reason, "finished");
  std::vector<nlohmann::json> records = read_metrics(out + "/metrics.jsonl");
  std::vector<nlohmann::json> steps = step_records(out);
  ASSERT_EQ(steps.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(steps[size_t(i)]["step"], i + 1);
    for (const char* key : {"loss", "lr", "tokens_per_s", "grad_norm"})
      EXPECT_TRUE(steps[size_t(i)][key].is_number()) << key;
    EXPECT_TRUE(std::isfinite(steps[size_t(i)]["loss"].get<double>()));
  }
  EXPECT_DOUBLE_EQ(steps[0]["lr"].get<double>(), 2.5e-3);  // warmup: half the peak at step 1 of 2
  int evals = 0;
  for (const nlohmann::json& r : records)
    if (r.value("eval", false)) {
      ++evals;
      EXPECT_TRUE(r["accuracy"].is_number());
    }
  EXPECT_EQ(evals, 2);  // step 4 and the end
  ASSERT_TRUE(result.final_eval && result.final_eval->accuracy);
  EXPECT_EQ(load_train_state(out).step, 6);
  EXPECT_NE(read_file(out + "/loss.svg").find("<polyline"), std::string::npos);
  // The saved weights are the trained ones.
  auto reloaded = model::LanguageModel::load(out, f32_on_cpu());
  for (const model::Parameter& p : model->parameters())
    EXPECT_EQ(reloaded->parameter(p.name).value.to_double_vector(), p.value.to_double_vector()) << p.name;
  // A second run into the same folder must ask for --resume.
  auto other = tiny_model(8);
  InterruptingTask more(-1);
  EXPECT_THROW(train(*other, more, small_run(out, 6)), Error);
}

TEST(Trainer, ResumeAfterCtrlCIsBitIdentical) {
  TempDir dir;
  const int64_t steps = 9;
  std::string straight = dir.file("straight"), interrupted = dir.file("interrupted");
  {
    auto model = tiny_model(8);
    InterruptingTask data(-1);
    train(*model, data, small_run(straight, steps));
  }
  {
    auto model = tiny_model(8);
    InterruptingTask data(2 * 5);  // Ctrl-C while step 5 draws its second micro-batch
    TrainResult r = train(*model, data, small_run(interrupted, steps));
    EXPECT_EQ(r.stop_reason, "interrupted");
    EXPECT_EQ(r.last_step, 5);
    EXPECT_EQ(load_train_state(interrupted).step, 5);
  }
  {
    recover_run(interrupted);
    auto model = model::LanguageModel::load(interrupted, f32_on_cpu());
    InterruptingTask data(-1);
    TrainOptions o = small_run(interrupted, steps);
    o.resume = true;
    TrainResult r = train(*model, data, o);
    EXPECT_EQ(r.first_step, 6);
    EXPECT_EQ(r.last_step, steps);
  }
  std::vector<nlohmann::json> a = step_records(straight), b = step_records(interrupted);
  ASSERT_EQ(a.size(), size_t(steps));
  ASSERT_EQ(b.size(), size_t(steps));
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]["step"], a[i]["step"]);
    EXPECT_EQ(b[i]["loss"].get<double>(), a[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(b[i]["lr"].get<double>(), a[i]["lr"].get<double>());
  }
  io::SafetensorsFile wa = io::read_safetensors(straight + "/model.safetensors");
  io::SafetensorsFile wb = io::read_safetensors(interrupted + "/model.safetensors");
  ASSERT_EQ(wa.tensors.size(), wb.tensors.size());
  for (const auto& [name, t] : wa.tensors) EXPECT_EQ(wb.tensors.at(name).to_double_vector(), t.to_double_vector());
}

TEST(Trainer, NonFiniteLossStopsAndKeepsTheLastCheckpoint) {
  TempDir dir;
  std::string out = dir.file("run");
  {
    auto model = tiny_model(8);
    InterruptingTask data(-1);
    train(*model, data, small_run(out, 3));
  }
  std::string weights = read_file(out + "/model.safetensors");
  auto model = model::LanguageModel::load(out, f32_on_cpu());
  float* w = model->parameters()[0].value.data<float>();
  w[0] = NAN;
  for (int64_t i = 0; i < model->parameters()[0].value.numel(); ++i) w[i] = NAN;
  InterruptingTask data(-1);
  TrainOptions o = small_run(out, 6);
  o.resume = true;
  try {
    train(*model, data, o);
    FAIL() << "a NaN loss did not stop training";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("step 4"), std::string::npos) << message;
    EXPECT_NE(message.find("last good checkpoint"), std::string::npos) << message;
  }
  EXPECT_EQ(load_train_state(out).step, 3);
  EXPECT_EQ(read_file(out + "/model.safetensors"), weights);
}

TEST(Trainer, DumpGradsWritesTheFirstGradientBeforeTheUpdate) {
  TempDir dir;
  Tensor input_ids = Tensor::from_vector({1, 5, 2, 7, 3, 3, 0, 6, 4, 1}, {2, 5}, DType::i64);
  auto source = make_fixed_batch_source(input_ids, 8, "test batch");
  auto model = tiny_model(8, 3);
  auto reference = tiny_model(8, 3);
  reference->enable_grad();
  reference->zero_grad();
  Batch batch = source->train_batch(2);
  reference->forward_backward(batch.ids, batch.targets, true);
  TrainOptions o = small_run(dir.file("run"), 1);
  o.batch = 2;
  o.grad_accum = 1;
  o.grad_clip = 1e-6;  // clipping happens after the dump
  o.dump_grads = dir.file("grads.safetensors");
  train(*model, *source, o);
  io::SafetensorsFile grads = io::read_safetensors(o.dump_grads);
  ASSERT_EQ(grads.tensors.size(), reference->parameters().size());
  for (const model::Parameter& p : reference->parameters()) {
    const Tensor& g = grads.tensors.at("grad." + p.name);
    EXPECT_EQ(g.dtype(), DType::f32);
    EXPECT_EQ(g.to_double_vector(), p.grad.to_double_vector()) << p.name;
  }
}

TEST(Trainer, TimeLimitStopsSavesAndEvaluates) {
  TempDir dir;
  std::string out = dir.file("run");
  auto model = tiny_model(8);
  InterruptingTask data(-1);
  TrainOptions o = small_run(out, 1000);
  o.time_limit_s = 1e-9;
  TrainResult r = train(*model, data, o);
  EXPECT_EQ(r.stop_reason, "time limit");
  EXPECT_EQ(r.last_step, 1);
  EXPECT_TRUE(r.final_eval.has_value());
  EXPECT_EQ(load_train_state(out).step, 1);
}

// The training trajectories of transformers on the fixture model (float64), from the same start.
class FixtureTrajectory : public ::testing::TestWithParam<const char*> {};

TEST_P(FixtureTrajectory, Mamba1LossesAndGradientsMatchTransformers) {
  std::string fixtures = MAMBACPP_FIXTURES;
  if (!fs::exists(fixtures + "/mamba1_train.json")) GTEST_SKIP() << "fixtures not found in " << fixtures;
  nlohmann::json expected = nlohmann::json::parse(read_file(fixtures + "/mamba1_train.json"));
  io::SafetensorsFile batch = io::read_safetensors(fixtures + "/mamba1_train.safetensors");
  auto model = model::LanguageModel::load(fixtures + "/mamba1", f32_on_cpu());
  auto source = make_fixed_batch_source(batch.tensors.at("input_ids"), model->config().vocab_size, "fixture batch");
  std::string kind = GetParam();
  const nlohmann::json& run = expected[kind];
  TempDir dir;
  TrainOptions o;
  o.out_dir = dir.file("run");
  o.steps = int64_t(run["losses"].size());
  o.batch = batch.tensors.at("input_ids").size(0);
  o.schedule = {ScheduleKind::constant, run["lr"].get<double>(), 0, 0, o.steps};
  o.grad_clip = 0;
  o.optimizer.kind = kind == "sgd" ? OptimizerKind::sgd : OptimizerKind::adamw;
  o.optimizer.weight_decay = run["weight_decay"].get<double>();
  if (kind == "adamw") {
    o.optimizer.beta1 = run["betas"][0].get<double>();
    o.optimizer.beta2 = run["betas"][1].get<double>();
    o.optimizer.eps = run["eps"].get<double>();
  }
  o.dump_grads = dir.file("grads.safetensors");
  o.quiet = true;
  train(*model, *source, o);
  std::vector<nlohmann::json> steps = step_records(o.out_dir);
  ASSERT_EQ(steps.size(), run["losses"].size());
  for (size_t k = 0; k < steps.size(); ++k) {
    double want = run["losses"][k].get<double>();
    EXPECT_LT(std::abs(steps[k]["loss"].get<double>() - want) / want, 1e-4) << kind << " step " << k + 1;
  }
  io::SafetensorsFile grads = io::read_safetensors(o.dump_grads);
  for (const auto& [name, g] : grads.tensors) {
    ASSERT_TRUE(batch.tensors.count(name)) << name << " has no fixture gradient";
    EXPECT_LT(relative_error(g, batch.tensors.at(name)), 1e-4) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizers, FixtureTrajectory, ::testing::Values("sgd", "adamw"));

}  // namespace
}  // namespace mamba::train

#include "train/run_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"

namespace mamba::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStaging = ".staging";
constexpr const char* kCommit = ".commit";

void move_committed_files(const fs::path& out) {
  fs::path commit = out / kCommit;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(commit)) {
    fs::rename(entry.path(), out / entry.path().filename(), ec);
    MAMBA_CHECK(!ec, "checkpoint '", out.string(), "': cannot move ", entry.path().string(),
                " into place: ", ec.message());
  }
  sync_directory(out.string());
  fs::remove_all(commit, ec);
  MAMBA_CHECK(!ec, "checkpoint '", out.string(), "': cannot remove ", commit.string(), ": ", ec.message());
  sync_directory(out.string());
}

}  // namespace

void sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  MAMBA_CHECK(fd >= 0, "folder '", dir, "': cannot open to sync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  MAMBA_CHECK(rc == 0, "folder '", dir, "': fsync failed: ", std::strerror(err));
}

void save_run(const std::string& out_dir, const io::ModelConfig& config, const io::TensorMap& weights,
              const TrainState& state) {
  fs::path out(out_dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  MAMBA_CHECK(!ec, "--out '", out_dir, "': cannot create the folder: ", ec.message());
  recover_run(out_dir);
  fs::path staging = out / kStaging;
  fs::create_directories(staging, ec);
  MAMBA_CHECK(!ec, "--out '", out_dir, "': cannot create ", staging.string(), ": ", ec.message());

  std::string step = std::to_string(state.step);
  io::save_checkpoint(staging.string(), config, weights, {{"format", "pt"}, {"step", step}});
  io::TensorMap tensors = state.optimizer;
  Tensor rng = Tensor::empty({4}, DType::i64);
  std::memcpy(rng.raw(), state.data_rng, sizeof(state.data_rng));
  tensors["data.rng_state"] = rng;
  io::write_safetensors((staging / kTrainStateTensors).string(), tensors, {{"step", step}});
  nlohmann::json json = state.info;
  json["step"] = state.step;
  io::write_file_atomic((staging / kTrainStateJson).string(), json.dump(2) + "\n");
  sync_directory(staging.string());

  fs::rename(staging, out / kCommit, ec);
  MAMBA_CHECK(!ec, "--out '", out_dir, "': cannot commit the checkpoint: ", ec.message());
  sync_directory(out_dir);
  move_committed_files(out);
}

void recover_run(const std::string& out_dir) {
  fs::path out(out_dir);
  std::error_code ec;
  if (fs::exists(out / kCommit)) move_committed_files(out);
  if (fs::exists(out / kStaging)) {
    fs::remove_all(out / kStaging, ec);
    MAMBA_CHECK(!ec, "--out '", out_dir, "': cannot remove the unfinished save ", (out / kStaging).string(), ": ",
                ec.message());
  }
}

bool has_run(const std::string& out_dir) { return fs::exists(fs::path(out_dir) / kTrainStateJson); }

TrainState load_train_state(const std::string& out_dir) {
  fs::path out(out_dir);
  std::string json_path = (out / kTrainStateJson).string();
  std::string tensors_path = (out / kTrainStateTensors).string();
  TrainState state;
  std::ifstream in(json_path);
  MAMBA_CHECK(in, "--resume: '", json_path, "' not found (no training run in --out '", out_dir, "')");
  try {
    in >> state.info;
    state.step = state.info.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("--resume: '", json_path, "' is not a valid training state: ", e.what());
  }
  io::SafetensorsFile file = io::read_safetensors(tensors_path);
  auto rng = file.tensors.find("data.rng_state");
  MAMBA_CHECK(rng != file.tensors.end() && rng->second.dtype() == DType::i64 && rng->second.numel() == 4, "--resume: '",
              tensors_path, "' lacks tensor data.rng_state (i64 [4])");
  std::memcpy(state.data_rng, rng->second.raw(), sizeof(state.data_rng));
  file.tensors.erase(rng);
  state.optimizer = std::move(file.tensors);
  auto step = file.metadata.find("step");
  MAMBA_CHECK(step != file.metadata.end() && step->second == std::to_string(state.step), "--resume: '", tensors_path,
              "' belongs to step ", step == file.metadata.end() ? "?" : step->second, " but '", json_path, "' to step ",
              state.step);
  return state;
}

}  // namespace mamba::train

// OUT/metrics.jsonl: one JSON object per line, flushed as written, so a killed run leaves whole lines.
//   training step: {"step": s (1-based), "loss": ..., "lr": ..., "grad_norm": ..., "tokens_per_s": ..., ...}
//   evaluation:    {"eval": true, "step": s, "loss": ..., and accuracy / bits_per_byte / bits_per_token}
// Doubles are written in the shortest form that reads back to the same bits (≥ 9 significant digits
// of information), so two runs' losses can be compared exactly.
//
// The loss plot is an SVG drawn by hand: training loss as a line, evaluation loss as a line with
// dots, linear axes with ticks, labels and a legend.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mamba::train {

class MetricsLog {
 public:
  // Opens `path` for appending. With keep_through_step ≥ 0 (a resumed run) the records of later
  // steps — written after the checkpoint being resumed — are dropped first; with −1 the file is
  // started afresh.
  MetricsLog(const std::string& path, int64_t keep_through_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Every record of a metrics file (malformed lines, e.g. a half-written last line, are skipped).
std::vector<nlohmann::json> read_metrics(const std::string& path);

struct CurvePoint {
  double step;
  double loss;
};
// The SVG document for the given curves (either may be empty).
std::string loss_curve_svg(const std::vector<CurvePoint>& train, const std::vector<CurvePoint>& eval,
                           const std::string& title);
// Reads the metrics file and writes the plot atomically.
void write_loss_plot(const std::string& metrics_path, const std::string& svg_path, const std::string& title);

}  // namespace mamba::train

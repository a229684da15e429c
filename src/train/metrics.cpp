#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"

namespace mamba::train {

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through_step) : path_(path) {
  std::string kept;
  if (keep_through_step >= 0) {
    for (const nlohmann::json& record : read_metrics(path))
      if (record.value("step", int64_t(0)) <= keep_through_step) kept += record.dump() + "\n";
  }
  file_ = std::fopen(path.c_str(), "w");
  MAMBA_CHECK(file_, "metrics file '", path, "': cannot open for writing");
  std::fputs(kept.c_str(), file_);
  std::fflush(file_);
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& record) {
  std::string line = record.dump() + "\n";
  MAMBA_CHECK(std::fputs(line.c_str(), file_) >= 0 && std::fflush(file_) == 0, "metrics file '", path_,
              "': write failed (disk full?)");
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> records;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object()) records.push_back(std::move(record));
  }
  return records;
}

namespace {

// Round tick spacing (1, 2 or 5 times a power of ten) giving about `count` intervals over `range`.
double tick_spacing(double range, int count) {
  double raw = range / count;
  double power = std::pow(10.0, std::floor(std::log10(raw)));
  double m = raw / power;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * power;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else
      out += c;
  }
  return out;
}

std::string number_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", std::abs(v) < 1e-12 ? 0.0 : v);
  return buf;
}

}  // namespace

std::string loss_curve_svg(const std::vector<CurvePoint>& train, const std::vector<CurvePoint>& eval,
                           const std::string& title) {
  const double width = 800, height = 480, left = 70, right = 20, top = 40, bottom = 55;
  double x_min = INFINITY, x_max = -INFINITY, y_min = INFINITY, y_max = -INFINITY;
  for (const auto* curve : {&train, &eval})
    for (const CurvePoint& p : *curve) {
      if (!std::isfinite(p.loss)) continue;
      x_min = std::min(x_min, p.step), x_max = std::max(x_max, p.step);
      y_min = std::min(y_min, p.loss), y_max = std::max(y_max, p.loss);
    }
  if (!(x_min <= x_max)) x_min = 0, x_max = 1, y_min = 0, y_max = 1;  // nothing to draw
  if (x_max == x_min) x_max = x_min + 1;
  if (y_max == y_min) y_min -= 0.5, y_max += 0.5;
  double y_pad = 0.05 * (y_max - y_min);
  y_min -= y_pad, y_max += y_pad;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  auto sx = [&](double x) { return left + (x - x_min) / (x_max - x_min) * plot_w; };
  auto sy = [&](double y) { return top + (y_max - y) / (y_max - y_min) * plot_h; };

  std::ostringstream svg;
  svg.precision(6);
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << xml_escape(title)
      << "</text>\n";
  // Grid, ticks and tick labels.
  double dx = tick_spacing(x_max - x_min, 8), dy = tick_spacing(y_max - y_min, 6);
  for (double x = std::ceil(x_min / dx) * dx; x <= x_max + 1e-9 * dx; x += dx)
    svg << "<line x1=\"" << sx(x) << "\" y1=\"" << top << "\" x2=\"" << sx(x) << "\" y2=\"" << top + plot_h
        << "\" stroke=\"#e4e4e4\"/>\n<text x=\"" << sx(x) << "\" y=\"" << top + plot_h + 16
        << "\" text-anchor=\"middle\">" << number_label(x) << "</text>\n";
  for (double y = std::ceil(y_min / dy) * dy; y <= y_max + 1e-9 * dy; y += dy)
    svg << "<line x1=\"" << left << "\" y1=\"" << sy(y) << "\" x2=\"" << left + plot_w << "\" y2=\"" << sy(y)
        << "\" stroke=\"#e4e4e4\"/>\n<text x=\"" << left - 6 << "\" y=\"" << sy(y) + 4 << "\" text-anchor=\"end\">"
        << number_label(y) << "</text>\n";
  // Axes and their labels.
  svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
      << "\" fill=\"none\" stroke=\"black\"/>\n"
      << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 12 << "\" text-anchor=\"middle\">step</text>\n"
      << "<text transform=\"translate(18," << top + plot_h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">loss (nats/token)</text>\n";
  // Curves: at most ~2000 vertices per line keeps the file small for long runs.
  auto polyline = [&](const std::vector<CurvePoint>& curve, const char* colour, bool dots) {
    if (curve.empty()) return;
    size_t stride = std::max<size_t>(1, curve.size() / 2000);
    svg << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\" points=\"";
    for (size_t i = 0; i < curve.size(); i += stride)
      if (std::isfinite(curve[i].loss)) svg << sx(curve[i].step) << "," << sy(curve[i].loss) << " ";
    svg << "\"/>\n";
    if (dots)
      for (const CurvePoint& p : curve)
        if (std::isfinite(p.loss))
          svg << "<circle cx=\"" << sx(p.step) << "\" cy=\"" << sy(p.loss) << "\" r=\"3\" fill=\"" << colour
              << "\"/>\n";
  };
  polyline(train, "#1f77b4", false);
  polyline(eval, "#d62728", true);
  // Legend.
  double lx = left + plot_w - 150, ly = top + 12;
  svg << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly
      << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n<text x=\"" << lx + 30 << "\" y=\"" << ly + 4
      << "\">training loss</text>\n"
      << "<line x1=\"" << lx << "\" y1=\"" << ly + 18 << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly + 18
      << "\" stroke=\"#d62728\" stroke-width=\"2\"/>\n<circle cx=\"" << lx + 12 << "\" cy=\"" << ly + 18
      << "\" r=\"3\" fill=\"#d62728\"/>\n<text x=\"" << lx + 30 << "\" y=\"" << ly + 22
      << "\">evaluation loss</text>\n</svg>\n";
  return svg.str();
}

void write_loss_plot(const std::string& metrics_path, const std::string& svg_path, const std::string& title) {
  std::vector<CurvePoint> train, eval;
  for (const nlohmann::json& r : read_metrics(metrics_path)) {
    if (!r.contains("step") || !r.contains("loss") || !r["loss"].is_number()) continue;
    CurvePoint p{r["step"].get<double>(), r["loss"].get<double>()};
    (r.value("eval", false) ? eval : train).push_back(p);
  }
  io::write_file_atomic(svg_path, loss_curve_svg(train, eval, title));
}

}  // namespace mamba::train

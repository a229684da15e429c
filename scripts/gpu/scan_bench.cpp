// Selective-scan timings on the GPU at the shapes of /work/shared/design/TARGETS.md (bf16 inputs,
// float32 A, D and delta bias, softplus, z given, B and C per position). For each shape: forward,
// forward+backward, and forward+backward as in training (the forward keeps its chunk states for the
// backward), median of cudaEvent-timed repetitions into preallocated outputs, as a
// ratio to the memory floor (bytes / 3028 GB/s) and to the official kernels' times.
// Then the forward's growth in L: batch 1, D 1536, L = 16k … 1M, fitted as t = a + b·L (least
// squares) with each point's residual, also drawn as OUT_scaling.svg (OUT.json's name).
// Usage: scan_bench OUT.json [--profile [BATCH D L] | --splits]   (--profile: one forward and one
// backward as in training (states kept) at the first shape or at BATCH, D, L, for running under
// ncu; --splits: only the sweep of the state-group kernels' split counts)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "bench_timing.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/cuda/scan_launch.h"

namespace {
using namespace mamba;
using namespace mamba::gpu_bench;

struct Shape4 {
  int batch, D, L, N;
  double official_fwd_ms, official_fwdbwd_ms, target_fwd_ms, target_fwdbwd_ms;
};

ops::ScanInputs random_inputs(Rng& rng, int batch, int D, int L, int N) {
  const DType bf16 = DType::bf16;
  ops::ScanInputs in;
  in.u = random_gpu(rng, {batch, L, D}, bf16, -1, 1);
  in.delta = random_gpu(rng, {batch, L, D}, bf16, -3, 0);
  in.z = random_gpu(rng, {batch, L, D}, bf16, -2, 2);
  in.B = random_gpu(rng, {batch, L, N}, bf16, -1, 1);
  in.C = random_gpu(rng, {batch, L, N}, bf16, -1, 1);
  in.A = random_gpu(rng, {D, N}, DType::f32, -4, -0.5);
  in.D = random_gpu(rng, {D}, DType::f32, -1, 1);
  in.delta_bias = random_gpu(rng, {D}, DType::f32, -1, 0);
  in.delta_softplus = true;
  return in;
}

// The measured times and the fitted line t = a + b·L on log-log axes (a straight line of slope 1
// is time proportional to L), written to `path` through a temporary file.
void write_scaling_svg(const std::string& path, const std::vector<double>& lengths, const std::vector<double>& times,
                       double a, double b) {
  const double W = 640, H = 380, left = 70, right = 30, top = 50, bottom = 55;
  const double x0 = std::log2(lengths.front()), x1 = std::log2(lengths.back());
  const double y0 = std::floor(std::log10(*std::min_element(times.begin(), times.end()))),
               y1 = std::ceil(std::log10(*std::max_element(times.begin(), times.end())));
  auto px = [&](double L) { return left + (std::log2(L) - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double ms) { return H - bottom - (std::log10(ms) - y0) / (y1 - y0) * (H - top - bottom); };
  std::string svg;
  char line[512];
  auto add = [&](auto... args) {
    std::snprintf(line, sizeof line, args...);
    svg += line;
  };
  add("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      W, H);
  add("<text x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">Selective scan forward on the GPU: time "
      "linear in length</text>\n",
      W / 2);
  add("<text x=\"%.0f\" y=\"40\" text-anchor=\"middle\">batch 1, D 1536, N 16, bf16; fit t = %.3f ms + %.2f ms per "
      "million positions</text>\n",
      W / 2, a, b * 1e6);
  add("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", left, H - bottom, W - right,
      H - bottom);
  add("<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", left, top, left, H - bottom);
  for (double e = y0; e <= y1; ++e)
    add("<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", left - 6, py(std::pow(10, e)) + 4,
        std::pow(10, e));
  std::string fit;
  for (size_t i = 0; i < lengths.size(); ++i) {
    add("<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.0fk</text>\n", px(lengths[i]), H - bottom + 16,
        lengths[i] / 1024);
    add("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#1f77b4\"/>\n", px(lengths[i]), py(times[i]));
    add("<text x=\"%.1f\" y=\"%.1f\" fill=\"#1f77b4\" text-anchor=\"end\">%.3f</text>\n", px(lengths[i]) - 6,
        py(times[i]) - 6, times[i]);
    std::snprintf(line, sizeof line, "%.1f,%.1f ", px(lengths[i]), py(a + b * lengths[i]));
    fit += line;
  }
  svg += "<polyline fill=\"none\" stroke=\"#d62728\" stroke-dasharray=\"5,4\" points=\"" + fit + "\"/>\n";
  add("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">sequence length L (positions, log scale)</text>\n", W / 2,
      H - 14);
  add("<text x=\"18\" y=\"%.0f\" transform=\"rotate(-90 18 %.0f)\" text-anchor=\"middle\">forward ms (log "
      "scale): measured (dots), fit (dashes)</text>\n</svg>\n",
      H / 2, H / 2);
  {
    std::ofstream out(path + ".tmp");
    out << svg;
    out.close();
    MAMBA_CHECK(out.good(), "scan_bench: could not write ", path, ".tmp");
  }
  MAMBA_CHECK(std::rename((path + ".tmp").c_str(), path.c_str()) == 0, "scan_bench: could not rename ", path,
              ".tmp to ", path);
}

// Forward time against L at batch 1, D 1536, N 16; returns the table, writes "scaling" JSON and
// the plot.
std::string length_scaling(std::ofstream& json, const std::string& svg_path) {
  const int D = 1536, N = 16;
  std::vector<double> lengths, times;
  // Long inputs repeat one random block of positions (drawing 10⁹ host randoms would take minutes).
  const int block = 16384;
  Rng rng(7);
  const ops::ScanInputs base = random_inputs(rng, 1, D, block, N);
  auto tiled = [&](const Tensor& t, int L) {
    Tensor out = Tensor::empty({1, L, t.size(2)}, t.dtype(), Device::cuda);
    for (int start = 0; start < L; start += block)
      check(cudaMemcpy(static_cast<char*>(out.raw()) + size_t(start) * t.size(2) * 2, t.raw(), t.nbytes(),
                       cudaMemcpyDeviceToDevice),
            "tile copy");
    return out;
  };
  for (int L = block; L <= (1 << 20); L *= 2) {
    ops::ScanInputs in = base;
    for (Tensor* t : {&in.u, &in.delta, &in.z, &in.B, &in.C}) *t = tiled(*t, L);
    const Tensor out = Tensor::empty(in.u.shape(), DType::bf16, Device::cuda);
    const Tensor last = Tensor::empty({1, D, N}, DType::f32, Device::cuda);
    times.push_back(median_ms([&] { ops::cuda_detail::selective_scan_forward_into(in, out, last); }, 2, 7));
    lengths.push_back(L);
  }
  const double n = double(lengths.size());
  double sl = 0, st = 0, sll = 0, slt = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    sl += lengths[i];
    st += times[i];
    sll += lengths[i] * lengths[i];
    slt += lengths[i] * times[i];
  }
  const double b = (n * slt - sl * st) / (n * sll - sl * sl), a = (st - b * sl) / n;
  std::string table = "\nscan forward against L (batch 1, D 1536, N 16): fit t = " + std::to_string(a) + " ms + " +
                      std::to_string(b * 1e6) + " ms per million positions\n";
  char line[256];
  std::snprintf(line, sizeof line, "%10s %10s %10s %10s %12s\n", "L", "ms", "fit ms", "residual", "ns/position");
  table += line;
  json << ",\n  {\"scaling\": [";
  for (size_t i = 0; i < lengths.size(); ++i) {
    const double fit = a + b * lengths[i];
    std::snprintf(line, sizeof line, "%10.0f %10.3f %10.3f %9.1f%% %12.3f\n", lengths[i], times[i], fit,
                  100 * (times[i] - fit) / fit, times[i] * 1e6 / lengths[i]);
    table += line;
    json << (i ? ", " : "") << "{\"L\": " << lengths[i] << ", \"fwd_ms\": " << times[i] << ", \"fit_ms\": " << fit
         << "}";
  }
  json << "], \"fit_a_ms\": " << a << ", \"fit_b_ms_per_position\": " << b << "}";
  write_scaling_svg(svg_path, lengths, times, a, b);
  return table + "plot: " + svg_path + "\n";
}

// The scans a whole-model prefill runs (one per layer and chunk of 2048 positions): mamba-130m and
// mamba-1.4b channels at batch 1 and 16, every forward variant.
std::string prefill_chunks() {
  std::string table = "\nprefill chunks (L 2048, N 16): forward ms by variant (default " +
                      std::to_string(ops::cuda_detail::kDefaultScanForwardVariant) + ")\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-14s %8s %8s %8s %8s %8s\n", "batch,D", "v0", "v1", "v2", "v3", "v4");
  table += line;
  Rng rng(11);
  for (const auto& [batch, D] : std::vector<std::pair<int, int>>{{1, 1536}, {16, 1536}, {1, 4096}, {16, 4096}}) {
    const ops::ScanInputs in = random_inputs(rng, batch, D, 2048, 16);
    const Tensor out = Tensor::empty(in.u.shape(), DType::bf16, Device::cuda);
    const Tensor last = Tensor::empty({batch, D, 16}, DType::f32, Device::cuda);
    double ms[5];
    for (int v = 0; v < 5; ++v) {
      ops::cuda_detail::set_selective_scan_forward_variant(v);
      ms[v] = median_ms([&] { ops::cuda_detail::selective_scan_forward_into(in, out, last); }, 3, 20);
    }
    ops::cuda_detail::set_selective_scan_forward_variant(ops::cuda_detail::kDefaultScanForwardVariant);
    std::snprintf(line, sizeof line, "%3d,%-10d %8.3f %8.3f %8.3f %8.3f %8.3f\n", batch, D, ms[0], ms[1], ms[2], ms[3],
                  ms[4]);
    table += line;
  }
  return table;
}

// Forward ms and forward+backward (states kept) ms by the number of length splits of the
// state-group kernels (0: the planned count), for choosing the plans' cost models.
std::string split_sweep() {
  std::string table = "\nsplit sweep: ms by forced split count (0 = planned)\n";
  const std::vector<int> counts = {0, 1, 2, 3, 4, 6, 8, 12, 16};
  char line[512];
  auto header = [&](const char* what) {
    std::string h = std::string(what);
    h.resize(24, ' ');
    for (int c : counts) {
      std::snprintf(line, sizeof line, " %7d", c);
      h += line;
    }
    table += h + "\n";
  };
  auto row = [&](int batch, int D, int L, const std::vector<double>& ms) {
    std::snprintf(line, sizeof line, "%d,%d,%-15d", batch, D, L);
    std::string r = line;
    r.resize(24, ' ');
    for (double v : ms) {
      std::snprintf(line, sizeof line, " %7.3f", v);
      r += line;
    }
    table += r + "\n";
  };
  using Dims = std::tuple<int, int, int>;
  Rng rng(13);
  header("forward");
  for (const auto& [batch, D, L] : std::vector<Dims>{
           {4, 4096, 2048}, {1, 4096, 8192}, {1, 1536, 65536}, {8, 1536, 2048}, {1, 4096, 2048}, {16, 1536, 2048}}) {
    const ops::ScanInputs in = random_inputs(rng, batch, D, L, 16);
    const Tensor out = Tensor::empty(in.u.shape(), DType::bf16, Device::cuda);
    const Tensor last = Tensor::empty({batch, D, 16}, DType::f32, Device::cuda);
    std::vector<double> ms;
    for (int c : counts) {
      ops::cuda_detail::set_selective_scan_splits(c, 0);
      ms.push_back(median_ms([&] { ops::cuda_detail::selective_scan_forward_into(in, out, last); }, 2, 7));
    }
    row(batch, D, L, ms);
  }
  // The training forward keeps its states for the backward; the training shapes of the 130m, 370m
  // and 1.4b rows of TARGETS.md (batch 8, 4, 2).
  const std::vector<Dims> training_shapes = {{8, 1536, 2048}, {4, 2048, 2048}, {2, 4096, 2048}};
  header("forward, states kept");
  for (const auto& [batch, D, L] : training_shapes) {
    const ops::ScanInputs in = random_inputs(rng, batch, D, L, 16);
    const Tensor out = Tensor::empty(in.u.shape(), DType::bf16, Device::cuda);
    const Tensor last = Tensor::empty({batch, D, 16}, DType::f32, Device::cuda);
    const int64_t stride = ops::scan_state_stride(DType::bf16, 16);
    const Tensor states = Tensor::empty({batch, (L + stride - 1) / stride, D, 16}, DType::f32, Device::cuda);
    std::vector<double> ms;
    for (int c : counts) {
      ops::cuda_detail::set_selective_scan_splits(c, 0);
      ms.push_back(median_ms([&] { ops::cuda_detail::selective_scan_forward_into(in, out, last, states); }, 2, 7));
    }
    row(batch, D, L, ms);
  }
  header("backward (f+b kept)");
  for (const auto& [batch, D, L] : std::vector<Dims>{
           {4, 4096, 2048}, {1, 4096, 8192}, {1, 1536, 65536}, {8, 1536, 2048}, {4, 2048, 2048}, {2, 4096, 2048}}) {
    ops::ScanInputs in = random_inputs(rng, batch, D, L, 16);
    const Device gpu = Device::cuda;
    const Tensor dout = random_gpu(rng, {batch, L, D}, DType::bf16, -1, 1);
    const Tensor out = Tensor::empty(in.u.shape(), DType::bf16, gpu);
    const Tensor last = Tensor::empty({batch, D, 16}, DType::f32, gpu);
    ops::ScanGrads g;
    for (Tensor* t : {&g.du, &g.ddelta, &g.dz}) *t = Tensor::empty(in.u.shape(), DType::bf16, gpu);
    g.dB = Tensor::empty(in.B.shape(), DType::bf16, gpu);
    g.dC = Tensor::empty(in.C.shape(), DType::bf16, gpu);
    g.dA = Tensor::empty(in.A.shape(), DType::f32, gpu);
    g.dD = Tensor::empty({D}, DType::f32, gpu);
    g.ddelta_bias = Tensor::empty({D}, DType::f32, gpu);
    const int64_t stride = ops::scan_state_stride(DType::bf16, 16);
    in.chunk_states = Tensor::empty({batch, (L + stride - 1) / stride, D, 16}, DType::f32, gpu);
    std::vector<double> ms;
    for (int c : counts) {
      ops::cuda_detail::set_selective_scan_splits(0, c);
      ms.push_back(median_ms(
          [&] {
            ops::cuda_detail::selective_scan_forward_into(in, out, last, in.chunk_states);
            ops::cuda_detail::selective_scan_backward_into(in, dout, Tensor(), g);
          },
          2, 5));
    }
    row(batch, D, L, ms);
  }
  ops::cuda_detail::set_selective_scan_splits(0, 0);
  return table;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string json_path = argc > 1 ? argv[1] : "scan_bench.json";
  const bool profile = argc > 2 && std::string(argv[2]) == "--profile";
  if (argc > 2 && std::string(argv[2]) == "--splits") {
    std::printf("%s", split_sweep().c_str());
    return 0;
  }
  const double bandwidth = 3028e9, exp_rate = 4.2e12;
  std::vector<Shape4> shapes = {{4, 4096, 2048, 16, 0.596, 3.03, 0.30, 1.5},
                                {1, 4096, 8192, 16, 0.754, 3.49, 0.38, 1.75},
                                {1, 1536, 65536, 16, 2.20, 9.99, 1.1, 5.0},
                                {8, 1536, 2048, 16, 0.45, 2.29, 0.23, 1.15}};
  if (profile && argc > 3) {
    // The shape to profile: three positive integers, or none for the first table shape.
    int dims[3] = {};
    for (int i = 0; i < 3; ++i) {
      const std::string text = 3 + i < argc ? argv[3 + i] : "";
      const bool digits =
          !text.empty() && text.size() < 10 && text.find_first_not_of("0123456789") == std::string::npos;
      dims[i] = digits ? std::stoi(text) : 0;
      if (dims[i] <= 0) {
        std::fprintf(stderr, "scan_bench --profile BATCH D L: %s must be a positive integer, got '%s'\n",
                     i == 0   ? "BATCH"
                     : i == 1 ? "D"
                              : "L",
                     text.c_str());
        return 2;
      }
    }
    shapes[0] = {dims[0], dims[1], dims[2], 16, 0, 0, 0, 0};
  }
  std::ofstream json(json_path);
  json << "[\n";
  std::string table;
  char line[512];
  std::snprintf(line, sizeof line, "%-22s %9s %8s %8s %8s %8s %8s %8s %8s | %9s %8s %8s %8s %9s\n", "batch,D,L,N",
                "fwd ms", "/floor", "/offic", "target", "v0", "v1", "v2", "v3", "f+b ms", "/floor", "/offic", "target",
                "f+b kept");
  table += line;
  try {
    for (size_t i = 0; i < (profile ? 1 : shapes.size()); ++i) {
      const Shape4& s = shapes[i];
      Rng rng(1 + i);
      const DType bf16 = DType::bf16;
      ops::ScanInputs in = random_inputs(rng, s.batch, s.D, s.L, s.N);
      const Tensor dout = random_gpu(rng, {s.batch, s.L, s.D}, bf16, -1, 1);
      const Device gpu = Device::cuda;
      const Tensor out = Tensor::empty(in.u.shape(), bf16, gpu);
      const Tensor last = Tensor::empty({s.batch, s.D, s.N}, DType::f32, gpu);
      ops::ScanGrads g;
      g.du = Tensor::empty(in.u.shape(), bf16, gpu);
      g.ddelta = Tensor::empty(in.u.shape(), bf16, gpu);
      g.dz = Tensor::empty(in.u.shape(), bf16, gpu);
      g.dB = Tensor::empty(in.B.shape(), bf16, gpu);
      g.dC = Tensor::empty(in.C.shape(), bf16, gpu);
      g.dA = Tensor::empty(in.A.shape(), DType::f32, gpu);
      g.dD = Tensor::empty({s.D}, DType::f32, gpu);
      g.ddelta_bias = Tensor::empty({s.D}, DType::f32, gpu);

      if (profile) {
        const int64_t stride = ops::scan_state_stride(bf16, s.N);
        ops::ScanInputs training = in;
        training.chunk_states = Tensor::empty({s.batch, (s.L + stride - 1) / stride, s.D, s.N}, DType::f32, gpu);
        ops::cuda_detail::selective_scan_forward_into(in, out, last, training.chunk_states);
        ops::cuda_detail::selective_scan_backward_into(training, dout, Tensor(), g);
        check(cudaDeviceSynchronize(), "profiled run");
        return 0;
      }
      const int reps = s.L > 10000 ? 10 : 20;
      const double fwd = median_ms([&] { ops::cuda_detail::selective_scan_forward_into(in, out, last); }, 3, reps);
      // The tuning variants of the forward kernel (scan_launch.h).
      constexpr int kDefault = ops::cuda_detail::kDefaultScanForwardVariant;
      double variant_ms[5] = {};  // index = variant; the default's is `fwd`, measured above
      variant_ms[kDefault] = fwd;
      for (int v = 0; v < 5; ++v) {
        if (v == kDefault) continue;
        ops::cuda_detail::set_selective_scan_forward_variant(v);
        variant_ms[v] = median_ms([&] { ops::cuda_detail::selective_scan_forward_into(in, out, last); }, 3, reps);
      }
      ops::cuda_detail::set_selective_scan_forward_variant(kDefault);
      const double both = median_ms(
          [&] {
            ops::cuda_detail::selective_scan_forward_into(in, out, last);
            ops::cuda_detail::selective_scan_backward_into(in, dout, Tensor(), g);
          },
          2, reps);
      // As in training: the forward keeps its chunk states and the backward takes them.
      const int64_t stride = ops::scan_state_stride(bf16, s.N), chunks = (s.L + stride - 1) / stride;
      ops::ScanInputs training = in;
      training.chunk_states = Tensor::empty({s.batch, chunks, s.D, s.N}, DType::f32, gpu);
      const double both_kept = median_ms(
          [&] {
            ops::cuda_detail::selective_scan_forward_into(in, out, last, training.chunk_states);
            ops::cuda_detail::selective_scan_backward_into(training, dout, Tensor(), g);
          },
          2, reps);
      // The outputs must be finite (random inputs, no overflow possible at these scales).
      for (const Tensor* t : std::initializer_list<const Tensor*>{&out, &g.du, &g.dB}) {
        const std::vector<double> v = t->slice(0, 1).to_double_vector();
        for (double x : v)
          if (!std::isfinite(x)) fail("non-finite output at shape ", i);
      }
      const double bld = double(s.batch) * s.L * s.D, bln = double(s.batch) * s.L * s.N;
      const double fwd_bytes = (4 * bld + 2 * bln) * 2, bwd_bytes = (7 * bld + 4 * bln) * 2;
      const double fwd_floor = fwd_bytes / bandwidth * 1e3, both_floor = (fwd_bytes + bwd_bytes) / bandwidth * 1e3;
      const double exps = bld * s.N, exp_floor = exps / exp_rate * 1e3;
      std::snprintf(line, sizeof line,
                    "%d,%d,%d,%-12d %9.3f %8.2f %8.2f %8.2f %8.3f %8.3f %8.3f %8.3f | %9.3f %8.2f %8.2f %8.2f %9.3f\n",
                    s.batch, s.D, s.L, s.N, fwd, fwd / fwd_floor, fwd / s.official_fwd_ms, s.target_fwd_ms,
                    variant_ms[0], variant_ms[1], variant_ms[2], variant_ms[3], both, both / both_floor,
                    both / s.official_fwdbwd_ms, s.target_fwdbwd_ms, both_kept);
      table += line;
      json << (i ? ",\n" : "") << "  {\"batch\": " << s.batch << ", \"D\": " << s.D << ", \"L\": " << s.L
           << ", \"N\": " << s.N << ", \"fwd_ms\": " << fwd << ", \"fwd_variant_ms\": [" << variant_ms[0] << ", "
           << variant_ms[1] << ", " << variant_ms[2] << ", " << variant_ms[3] << ", " << variant_ms[4] << "]"
           << ", \"fwd_bwd_ms\": " << both << ", \"fwd_bwd_kept_states_ms\": " << both_kept
           << ", \"fwd_memory_floor_ms\": " << fwd_floor << ", \"fwd_bwd_memory_floor_ms\": " << both_floor
           << ", \"fwd_exp_floor_ms\": " << exp_floor << ", \"official_fwd_ms\": " << s.official_fwd_ms
           << ", \"official_fwd_bwd_ms\": " << s.official_fwdbwd_ms << "}";
      std::fflush(stdout);
    }
    const std::string stem =
        json_path.size() > 5 && json_path.ends_with(".json") ? json_path.substr(0, json_path.size() - 5) : json_path;
    if (!profile) table += length_scaling(json, stem + "_scaling.svg") + prefill_chunks();
  } catch (const Error& e) {
    std::fprintf(stderr, "scan_bench: %s\n", e.what());
    return 1;
  }
  json << "\n]\n";
  std::printf("\nselective scan, bf16, H100 (floor = bytes / 3028 GB/s; official = state-spaces/mamba 2.3.2)\n%s",
              table.c_str());
  return 0;
}

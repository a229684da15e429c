// Tokenizer throughput on one core, in MB/s of UTF-8 text (Google Benchmark's bytes_per_second).
//
// The text is a few MB of mixed material: the English prose, verse, code and ASCII art of the
// Debian `fortunes` package (/usr/share/games/fortunes, installed by scripts/setup.sh; another
// folder of text files with $MAMBACPP_BENCH_TEXT),
// interleaved with the multilingual strings of the tokenizer vectors (scripts, emoji, numbers,
// code, whitespace runs, special tokens). The GPT-NeoX tokenizer and the vectors are read from
// $MAMBACPP_FIXTURES (default ../shared/fixtures, relative to the working directory); the BPE
// benchmarks are skipped with a message when it is missing.
//
//   ./build/mambacpp_bench --benchmark_filter=Tokenizer
// (main() comes from benchmark_main; this file only registers benchmarks.)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba::tokenizer {
namespace {

namespace fs = std::filesystem;

std::string fixtures_dir() {
  const char* from_env = std::getenv("MAMBACPP_FIXTURES");
  return from_env ? from_env : "../shared/fixtures";
}

std::string read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

// The strings of tokenizer_vectors.json, or a few built-in ones when the fixtures are absent.
std::vector<std::string> multilingual_strings() {
  std::vector<std::string> strings;
  const fs::path vectors = fs::path(fixtures_dir()) / "tokenizer_vectors.json";
  if (fs::exists(vectors))
    for (const auto& vector : nlohmann::json::parse(read_file(vectors))["vectors"])
      strings.push_back(vector["text"].get<std::string>());
  if (strings.empty())
    strings = {"Grüße aus Köln", "Привет, мир!", "你好，世界！", "I love 🍕 and 🐍!", "x = [1, 2, 3]\n"};
  return strings;
}

const std::string& mixed_text() {
  static const std::string text = [] {
    const std::vector<std::string> extra = multilingual_strings();
    std::vector<fs::path> files;
    std::error_code error;
    const char* text_dir = std::getenv("MAMBACPP_BENCH_TEXT");
    for (const auto& entry : fs::directory_iterator(text_dir ? text_dir : "/usr/share/games/fortunes", error))
      if (entry.is_regular_file() && !entry.is_symlink() && entry.path().extension() != ".dat")
        files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    std::string out;
    size_t next_extra = 0;
    // Enough repetitions to reach a few MB even where the fortunes are missing.
    for (int round = 0; out.size() < (4u << 20) && round < 64; ++round)
      for (const fs::path& file : files) {
        std::string contents = utf8_lossy(read_file(file));
        for (size_t line_start = 0; line_start < contents.size();) {
          size_t line_end = contents.find('\n', line_start);
          line_end = line_end == std::string::npos ? contents.size() : line_end + 1;
          out.append(contents, line_start, line_end - line_start);
          if (line_start % 7 == 0) out += extra[next_extra++ % extra.size()] + "\n";  // ~ one line in 7
          line_start = line_end;
        }
        if (out.size() >= (4u << 20)) break;
      }
    while (out.size() < (1u << 20)) out += extra[next_extra++ % extra.size()] + " ";
    return out;
  }();
  return text;
}

const Tokenizer* neox() {
  static const std::unique_ptr<Tokenizer> tokenizer = [] {
    const fs::path path = fs::path(fixtures_dir()) / "gpt-neox-20b-tokenizer.json";
    return fs::exists(path) ? load_tokenizer(path.string()) : nullptr;
  }();
  return tokenizer.get();
}

#define SKIP_WITHOUT_NEOX(state)                                                                                      \
  if (!neox()) {                                                                                                      \
    state.SkipWithError(("no gpt-neox-20b-tokenizer.json in " + fixtures_dir() + "; set MAMBACPP_FIXTURES").c_str()); \
    return;                                                                                                           \
  }

// Steady state: the word cache is warm after the first pass.
void BM_TokenizerEncodeNeox(benchmark::State& state) {
  SKIP_WITHOUT_NEOX(state);
  const std::string& text = mixed_text();
  size_t tokens = neox()->encode(text).size();  // warms the cache
  for (auto _ : state) {
    const std::vector<int32_t> ids = neox()->encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["text_MB"] = double(text.size()) / 1e6;
  state.counters["bytes_per_token"] = double(text.size()) / double(tokens);
}
BENCHMARK(BM_TokenizerEncodeNeox)->Unit(benchmark::kMillisecond);

// A freshly loaded tokenizer each time: every word goes through the merge loop once.
void BM_TokenizerEncodeNeoxColdCache(benchmark::State& state) {
  SKIP_WITHOUT_NEOX(state);
  const std::string& text = mixed_text();
  const std::string path = (fs::path(fixtures_dir()) / "gpt-neox-20b-tokenizer.json").string();
  for (auto _ : state) {
    state.PauseTiming();
    const std::unique_ptr<Tokenizer> fresh = load_tokenizer(path);
    state.ResumeTiming();
    benchmark::DoNotOptimize(fresh->encode(text).data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_TokenizerEncodeNeoxColdCache)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_TokenizerDecodeNeox(benchmark::State& state) {
  SKIP_WITHOUT_NEOX(state);
  const std::vector<int32_t> ids = neox()->encode(mixed_text());
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = neox()->decode(ids);
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(bytes));
}
BENCHMARK(BM_TokenizerDecodeNeox)->Unit(benchmark::kMillisecond);

void BM_TokenizerStreamDecodeNeox(benchmark::State& state) {
  SKIP_WITHOUT_NEOX(state);
  const std::vector<int32_t> ids = neox()->encode(mixed_text());
  for (auto _ : state) {
    StreamDecoder decoder(*neox());
    size_t printed = 0;
    for (int32_t id : ids) printed += decoder.feed(id).size();
    printed += decoder.flush().size();
    benchmark::DoNotOptimize(printed);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(mixed_text().size()));
  state.counters["tokens_per_second"] =
      benchmark::Counter(double(ids.size()) * double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TokenizerStreamDecodeNeox)->Unit(benchmark::kMillisecond);

void BM_TokenizerLoadNeox(benchmark::State& state) {
  SKIP_WITHOUT_NEOX(state);
  const std::string path = (fs::path(fixtures_dir()) / "gpt-neox-20b-tokenizer.json").string();
  for (auto _ : state) benchmark::DoNotOptimize(load_tokenizer(path)->size());
}
BENCHMARK(BM_TokenizerLoadNeox)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_TokenizerEncodeBytes(benchmark::State& state) {
  const ByteTokenizer tokenizer;
  const std::string& text = mixed_text();
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer.encode(text).data());
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_TokenizerEncodeBytes)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace mamba::tokenizer

#include "train/data.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace mamba::train {

namespace {

std::string read_whole_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  MAMBA_CHECK(in, what, " '", path, "': cannot open for reading");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  MAMBA_CHECK(!in.bad(), what, " '", path, "': read error");
  return bytes.str();
}

void check_ids(const std::vector<int32_t>& ids, int64_t vocab, const std::string& what) {
  for (size_t i = 0; i < ids.size(); ++i)
    MAMBA_CHECK(ids[i] >= 0 && ids[i] < vocab, what, ": token ", i, " has id ", ids[i], ", outside the vocabulary [0, ",
                vocab, ")");
}

Batch new_batch(int64_t batch, int64_t length) {
  return {Tensor::empty({batch, length}, DType::i32), Tensor::empty({batch, length}, DType::i32)};
}

class StreamSource final : public DataSource {
 public:
  StreamSource(std::vector<int32_t> tokens, int64_t vocab, Metric metric, double bytes_per_token,
               const StreamOptions& options, const std::string& what)
      : DataSource(options.seed),
        tokens_(std::move(tokens)),
        vocab_(vocab),
        metric_(metric),
        bytes_per_token_(bytes_per_token),
        length_(options.seq_len),
        what_(what) {
    MAMBA_CHECK(options.seq_len >= 1, "--seq-len: must be at least 1, got ", options.seq_len);
    MAMBA_CHECK(options.val_fraction >= 0 && options.val_fraction < 1, "--val-fraction: must lie in [0, 1), got ",
                options.val_fraction);
    int64_t n = int64_t(tokens_.size());
    int64_t n_val = int64_t(std::floor(double(n) * options.val_fraction));
    train_end_ = n - n_val;
    MAMBA_CHECK(train_end_ >= length_ + 1, what_, ": the training part has ", train_end_, " tokens; --seq-len ",
                length_, " needs at least ", length_ + 1,
                " (use a longer file, a smaller --seq-len or --val-fraction)");
    // With no validation part the evaluation reads the training part.
    val_begin_ = n_val > 0 ? train_end_ : 0;
    MAMBA_CHECK(n - val_begin_ >= length_ + 1, what_, ": the validation part (last ", options.val_fraction,
                " of the data) has ", n - val_begin_, " tokens; --seq-len ", length_, " needs at least ", length_ + 1,
                " (raise --val-fraction or lower --seq-len)");
  }

  std::string describe() const override {
    int64_t n = int64_t(tokens_.size());
    if (val_begin_ == 0) return detail::concat(what_, ": ", n, " tokens");
    return detail::concat(what_, ": ", n, " tokens (", train_end_, " training, ", n - train_end_, " validation)");
  }
  int64_t vocab() const override { return vocab_; }
  int64_t seq_len() const override { return length_; }
  Metric metric() const override { return metric_; }
  double bytes_per_token() const override { return bytes_per_token_; }

  Batch train_batch(int64_t batch) override {
    Batch out = new_batch(batch, length_);
    int32_t* ids = out.ids.data<int32_t>();
    int32_t* targets = out.targets.data<int32_t>();
    for (int64_t b = 0; b < batch; ++b) {
      int64_t start = int64_t(rng_.below(uint64_t(train_end_ - length_)));
      std::memcpy(ids + b * length_, tokens_.data() + start, size_t(length_) * 4);
      std::memcpy(targets + b * length_, tokens_.data() + start + 1, size_t(length_) * 4);
    }
    return out;
  }

  std::vector<Batch> eval_batches(int64_t batch, int64_t max_batches) const override {
    int64_t windows = (int64_t(tokens_.size()) - val_begin_ - 1) / length_;
    if (max_batches > 0) windows = std::min(windows, max_batches * batch);
    std::vector<Batch> batches;
    for (int64_t first = 0; first < windows; first += batch) {
      int64_t rows = std::min(batch, windows - first);
      Batch out = new_batch(rows, length_);
      for (int64_t b = 0; b < rows; ++b) {
        const int32_t* window = tokens_.data() + val_begin_ + (first + b) * length_;
        std::memcpy(out.ids.data<int32_t>() + b * length_, window, size_t(length_) * 4);
        std::memcpy(out.targets.data<int32_t>() + b * length_, window + 1, size_t(length_) * 4);
      }
      batches.push_back(std::move(out));
    }
    return batches;
  }

 private:
  std::vector<int32_t> tokens_;
  int64_t vocab_;
  Metric metric_;
  double bytes_per_token_;
  int64_t length_;
  std::string what_;
  int64_t train_end_ = 0;
  int64_t val_begin_ = 0;
};

int64_t task_seq_len(const TaskOptions& task) {
  return task.kind == TaskKind::selective_copying ? task.length + task.tokens : task.length;
}

void validate_task(const TaskOptions& task) {
  if (task.kind == TaskKind::selective_copying) {
    MAMBA_CHECK(task.vocab >= 3, "--task-vocab: selective copying needs at least 3 ids (noise, data, marker), got ",
                task.vocab);
    MAMBA_CHECK(task.tokens >= 1 && task.tokens <= task.length,
                "--task-tokens: must lie in [1, --task-len = ", task.length, "], got ", task.tokens);
  } else {
    MAMBA_CHECK(task.vocab >= 2, "--task-vocab: induction heads needs at least 2 ids (trigger and one token), got ",
                task.vocab);
    MAMBA_CHECK(task.length >= 3, "--task-len: induction heads needs at least 3 positions, got ", task.length);
  }
  MAMBA_CHECK(task.length >= 1, "--task-len: must be positive, got ", task.length);
}

class TaskSource final : public DataSource {
 public:
  explicit TaskSource(const TaskOptions& task) : DataSource(task.seed), task_(task) { validate_task(task); }

  std::string describe() const override {
    if (task_.kind == TaskKind::selective_copying)
      return detail::concat("selective copying: body ", task_.length, ", ", task_.tokens, " tokens, vocab ",
                            task_.vocab);
    return detail::concat("induction heads: length ", task_.length, ", vocab ", task_.vocab);
  }
  int64_t vocab() const override { return task_.vocab; }
  int64_t seq_len() const override { return task_seq_len(task_); }
  Metric metric() const override { return Metric::accuracy; }

  Batch train_batch(int64_t batch) override { return generate(batch, rng_); }

  std::vector<Batch> eval_batches(int64_t batch, int64_t max_batches) const override {
    Rng rng(kTaskEvalSeed, uint64_t(task_.kind));
    int64_t sequences = kTaskEvalSequences;
    if (max_batches > 0) sequences = std::min(sequences, max_batches * batch);
    std::vector<Batch> batches;
    for (int64_t first = 0; first < sequences; first += batch)
      batches.push_back(generate(std::min(batch, sequences - first), rng));
    return batches;
  }

 private:
  Batch generate(int64_t batch, Rng& rng) const {
    int64_t length = seq_len();
    Batch out = new_batch(batch, length);
    for (int64_t b = 0; b < batch; ++b)
      generate_task_sequence(task_, rng, out.ids.data<int32_t>() + b * length,
                             out.targets.data<int32_t>() + b * length);
    return out;
  }
  TaskOptions task_;
};

class FixedBatchSource final : public DataSource {
 public:
  FixedBatchSource(Batch batch, int64_t vocab, std::string what)
      : DataSource(0), batch_(std::move(batch)), vocab_(vocab), what_(std::move(what)) {}
  std::string describe() const override {
    return detail::concat(what_, ": fixed batch ", shape_string(batch_.ids.shape()));
  }
  int64_t vocab() const override { return vocab_; }
  int64_t seq_len() const override { return batch_.ids.size(1); }
  Metric metric() const override { return Metric::bits_per_token; }
  Batch train_batch(int64_t batch) override {
    MAMBA_CHECK(batch == batch_.ids.size(0), "--batch ", batch, " disagrees with the fixed batch's ",
                batch_.ids.size(0), " rows (", what_, ")");
    return batch_;
  }
  std::vector<Batch> eval_batches(int64_t, int64_t) const override { return {batch_}; }

 private:
  Batch batch_;
  int64_t vocab_;
  std::string what_;
};

}  // namespace

std::vector<int32_t> read_byte_tokens(const std::string& path) {
  std::string bytes = read_whole_file(path, "--data");
  std::vector<int32_t> ids(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) ids[i] = int32_t(static_cast<unsigned char>(bytes[i]));
  return ids;
}

std::vector<int32_t> read_token_file(const std::string& path, int token_bytes, int64_t vocab) {
  MAMBA_CHECK(token_bytes == 2 || token_bytes == 4, "--token-bytes: must be 2 or 4, got ", token_bytes);
  std::string bytes = read_whole_file(path, "--data");
  MAMBA_CHECK(bytes.size() % size_t(token_bytes) == 0, "--data '", path, "': ", bytes.size(),
              " bytes is not a multiple of --token-bytes ", token_bytes, " (wrong --token-bytes?)");
  std::vector<int32_t> ids(bytes.size() / size_t(token_bytes));
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  for (size_t i = 0; i < ids.size(); ++i) {
    const unsigned char* p = b + i * size_t(token_bytes);
    uint32_t id = token_bytes == 2 ? uint32_t(p[0]) | uint32_t(p[1]) << 8
                                   : uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
    MAMBA_CHECK(int64_t(id) < vocab, "--data '", path, "': token ", i, " (byte offset ", i * size_t(token_bytes),
                ") has id ", id, ", outside the vocabulary [0, ", vocab, ") (wrong --token-bytes or --vocab?)");
    ids[i] = int32_t(id);
  }
  return ids;
}

std::string read_text_file(const std::string& path) { return read_whole_file(path, "--data"); }

std::unique_ptr<DataSource> make_stream_source(std::vector<int32_t> tokens, int64_t vocab, Metric metric,
                                               double bytes_per_token, const StreamOptions& options,
                                               const std::string& what) {
  check_ids(tokens, vocab, what);
  return std::make_unique<StreamSource>(std::move(tokens), vocab, metric, bytes_per_token, options, what);
}

std::unique_ptr<DataSource> make_text_source(const std::string& path, const EncodeFn& encode, int64_t vocab,
                                             const StreamOptions& options) {
  std::string text = read_text_file(path);
  std::vector<int32_t> ids = encode(text);
  MAMBA_CHECK(!ids.empty(), "--data '", path, "': the tokenizer produced no tokens");
  double bytes_per_token = double(text.size()) / double(ids.size());
  return make_stream_source(std::move(ids), vocab, Metric::bits_per_token, bytes_per_token, options,
                            "--data '" + path + "' (text)");
}

TaskKind task_kind_from_name(const std::string& name, const std::string& flag) {
  if (name == "selective-copying") return TaskKind::selective_copying;
  if (name == "induction-heads") return TaskKind::induction_heads;
  fail(flag, ": unknown task '", name, "' (expected selective-copying or induction-heads)");
}

void generate_task_sequence(const TaskOptions& task, Rng& rng, int32_t* ids, int32_t* targets) {
  int64_t length = task_seq_len(task);
  std::fill(targets, targets + length, -1);
  if (task.kind == TaskKind::selective_copying) {
    const int32_t noise = 0, marker = int32_t(task.vocab - 1);
    // Selection sampling: position t is chosen with probability (still needed)/(still left), which
    // picks M distinct positions uniformly, already in order.
    int64_t chosen = 0;
    for (int64_t t = 0; t < task.length; ++t) {
      bool take = int64_t(rng.below(uint64_t(task.length - t))) < task.tokens - chosen;
      if (take) {
        int32_t data = int32_t(1 + rng.below(uint64_t(task.vocab - 2)));
        ids[t] = data;
        targets[task.length + chosen] = data;
        ++chosen;
      } else {
        ids[t] = noise;
      }
    }
    for (int64_t i = 0; i < task.tokens; ++i) ids[task.length + i] = marker;
  } else {
    const int32_t trigger = 0;
    int64_t p = int64_t(rng.below(uint64_t(task.length - 2)));
    for (int64_t t = 0; t < task.length; ++t) ids[t] = int32_t(1 + rng.below(uint64_t(task.vocab - 1)));
    ids[p] = trigger;
    ids[task.length - 1] = trigger;
    targets[task.length - 1] = ids[p + 1];
  }
}

std::unique_ptr<DataSource> make_task_source(const TaskOptions& task) { return std::make_unique<TaskSource>(task); }

std::unique_ptr<DataSource> make_fixed_batch_source(const Tensor& input_ids, int64_t vocab, const std::string& what) {
  MAMBA_CHECK(input_ids.ndim() == 2 && input_ids.size(0) >= 1 && input_ids.size(1) >= 2, what,
              ": input_ids must be [B, L] with L ≥ 2, found ", shape_string(input_ids.shape()));
  MAMBA_CHECK(input_ids.dtype() == DType::i64 || input_ids.dtype() == DType::i32, what,
              ": input_ids must be int64 or int32, found ", dtype_name(input_ids.dtype()));
  Tensor ids = input_ids.to(Device::cpu).to(DType::i32);
  int64_t rows = ids.size(0), length = ids.size(1);
  const int32_t* src = ids.data<int32_t>();
  for (int64_t i = 0; i < rows * length; ++i)
    MAMBA_CHECK(src[i] >= 0 && src[i] < vocab, what, ": input_ids[", i / length, ", ", i % length, "] = ", src[i],
                " is outside the vocabulary [0, ", vocab, ")");
  Tensor targets = Tensor::empty({rows, length}, DType::i32);
  int32_t* dst = targets.data<int32_t>();
  for (int64_t b = 0; b < rows; ++b)
    for (int64_t t = 0; t < length; ++t) dst[b * length + t] = t + 1 < length ? src[b * length + t + 1] : -1;
  return std::make_unique<FixedBatchSource>(Batch{ids, targets}, vocab, what);
}

AccuracyCount count_correct(const Tensor& predictions, const Tensor& targets) {
  MAMBA_CHECK(predictions.numel() == targets.numel(), "accuracy: ", predictions.numel(), " predictions for ",
              targets.numel(), " targets");
  Tensor p = predictions.to(Device::cpu).to(DType::i32), t = targets.to(Device::cpu).to(DType::i32);
  AccuracyCount count;
  const int32_t* pd = p.data<int32_t>();
  const int32_t* td = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (td[i] < 0) continue;
    ++count.total;
    count.correct += pd[i] == td[i];
  }
  return count;
}

}  // namespace mamba::train

// Training data: sources of batches ids [B, L] i32 and targets [B, L] i32, where targets[b, t] is
// what the model reading ids[b, 0..t] must predict, and −1 marks a position that is not scored.
//
// Token streams (raw bytes of a file, vocab 256; token-id files of little-endian uint16/uint32;
// text through a tokenizer's encode callback) are split into a training part (the first
// 1 − val_fraction of the tokens) and a validation part (the rest). A training batch takes B
// windows of L + 1 tokens at uniformly random starts inside the training part, drawn from the
// source's Rng: ids = window[0, L), targets = window[1, L] (next token). Validation batches are the
// consecutive non-overlapping windows of the validation part, in order, the same every time.
//
// Synthetic tasks (MAMBA.md), generated on the fly from the Rng:
//  * Selective Copying, vocabulary V: noise 0, marker V−1, data tokens uniform in 1…V−2. A sequence
//    is a body of L tokens holding M data tokens at M distinct random positions (in position order),
//    noise elsewhere, followed by M markers: ids has length L + M. The model reading the i-th marker
//    (position L + i, i = 0…M−1) must output the i-th data token: targets[L + i] = dᵢ, all other
//    targets −1. So the first marker is where the answers start; the data never appear in the ids
//    after the body.
//  * Induction Heads, vocabulary V: trigger 0, other tokens uniform in 1…V−1. Length L: the trigger
//    at one random position p ∈ [0, L−3], the answer b at p + 1, random non-trigger tokens elsewhere,
//    and the trigger again at L − 1. Only the last position is scored: targets[L−1] = b.
// Their evaluation set is 1024 sequences drawn from kTaskEvalSeed (independent of --seed), the same
// for every run. Accuracy = fraction of scored positions whose argmax prediction equals the target.
//
// Resume: a source's whole position is its Rng state (get_rng_state/set_rng_state); restoring it
// continues the exact batch sequence.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace mamba::train {

struct Batch {
  Tensor ids;      // [B, L] i32
  Tensor targets;  // [B, L] i32, −1 = not scored
};

// What the evaluation reports besides loss.
enum class Metric { bits_per_byte, bits_per_token, accuracy };

constexpr uint64_t kTaskEvalSeed = 0x5EEDE7A1ull;
constexpr int64_t kTaskEvalSequences = 1024;

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual std::string describe() const = 0;
  virtual int64_t vocab() const = 0;    // every id and target is below this
  virtual int64_t seq_len() const = 0;  // L of every batch
  virtual Metric metric() const = 0;
  // Bytes of input text per token (1 for bytes; measured over the file for text; 0 when meaningless).
  virtual double bytes_per_token() const { return 0; }
  // The next training batch of `batch` sequences; advances the Rng.
  virtual Batch train_batch(int64_t batch) = 0;
  // The fixed evaluation set cut into batches of at most `batch` sequences, at most `max_batches`
  // of them (0: all).
  virtual std::vector<Batch> eval_batches(int64_t batch, int64_t max_batches) const = 0;

  void get_rng_state(uint64_t out[4]) const { rng_.get_state(out); }
  void set_rng_state(const uint64_t in[4]) { rng_.set_state(in); }

 protected:
  explicit DataSource(uint64_t seed) : rng_(seed, /*stream=*/0xDA7A) {}
  Rng rng_;
};

// Token ids of a file: raw bytes (each byte one token), or little-endian ids of `token_bytes`
// (2 or 4) bytes each, checked against `vocab` (the message names the file, offset and id).
std::vector<int32_t> read_byte_tokens(const std::string& path);
std::vector<int32_t> read_token_file(const std::string& path, int token_bytes, int64_t vocab);
std::string read_text_file(const std::string& path);

using EncodeFn = std::function<std::vector<int32_t>(const std::string&)>;

struct StreamOptions {
  int64_t seq_len = 256;
  double val_fraction = 0.05;
  uint64_t seed = 0;
};

// A token stream split into training and validation parts. `what` names the data in messages.
std::unique_ptr<DataSource> make_stream_source(std::vector<int32_t> tokens, int64_t vocab, Metric metric,
                                               double bytes_per_token, const StreamOptions& options,
                                               const std::string& what);
// Text encoded by `encode`; ids are checked against vocab. bits per byte use the file's bytes per token.
std::unique_ptr<DataSource> make_text_source(const std::string& path, const EncodeFn& encode, int64_t vocab,
                                             const StreamOptions& options);

enum class TaskKind { selective_copying, induction_heads };
TaskKind task_kind_from_name(const std::string& name, const std::string& flag);

struct TaskOptions {
  TaskKind kind = TaskKind::selective_copying;
  int64_t length = 256;  // L: the body (selective copying) or the whole sequence (induction heads)
  int64_t tokens = 16;   // M, selective copying only
  int64_t vocab = 16;
  uint64_t seed = 0;
};

// One sequence of a task (ids and targets of equal length), drawn from rng.
void generate_task_sequence(const TaskOptions& task, Rng& rng, int32_t* ids, int32_t* targets);
std::unique_ptr<DataSource> make_task_source(const TaskOptions& task);

// The same batch at every step: input_ids [B, L] (int64 or int32) from a safetensors file,
// targets = next token (the last position −1).
std::unique_ptr<DataSource> make_fixed_batch_source(const Tensor& input_ids, int64_t vocab, const std::string& what);

// Scored positions whose prediction equals the target, out of all scored positions.
struct AccuracyCount {
  int64_t correct = 0;
  int64_t total = 0;
};
AccuracyCount count_correct(const Tensor& predictions, const Tensor& targets);

}  // namespace mamba::train

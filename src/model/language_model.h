// A Mamba language model: embedding → blocks (fused residual add + norm → mixer) → final norm →
// LM head. Written once for every device: it calls ops:: entry points only, which dispatch on
// the tensors' device. Parameters carry their Hugging Face names, so loading and saving are a
// table lookup.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "ops/cross_entropy.h"
#include "ops/decode_stack.h"

namespace mamba::model {

struct Parameter {
  std::string name;   // Hugging Face name, e.g. backbone.layers.3.mixer.A_log
  Tensor value;       // weights: stored dtype (or --dtype); float32 for A_log, D, biases, norms
  Tensor grad;        // f32, same shape; allocated by enable_grad() as a view of one buffer for all
  bool weight_decay;  // false for A_log, D, biases and norm weights
  // Mixed-precision training: the bf16 copy of a weight matrix that products read (rewritten by the
  // optimiser's step, or remade by parameters_changed); undefined otherwise.
  Tensor compute;
  const Tensor& for_compute() const { return compute.defined() ? compute : value; }
};

struct LoadOptions {
  Device device = Device::cpu;
  // Weight matrices are converted to this dtype on load unless `keep_stored_dtype`.
  DType weight_dtype = DType::f32;
  bool keep_stored_dtype = true;
};

// Recurrent state of a batch of sequences: per Mamba-1 layer conv [batch, D, K−1] and SSM
// [batch, D, N], both f32. Its size does not depend on how many tokens were consumed.
struct StepRecording;
struct PrefillRecording;
struct TrainingRecording;
struct InferenceState {
  int64_t batch = 0;
  std::vector<Tensor> conv;
  std::vector<Tensor> ssm;
  int64_t bytes() const;
  // CUDA: the decode step recorded as a graph for these state tensors (see LanguageModel::step).
  std::shared_ptr<StepRecording> step_recording;
};

// Result of a training forward(+backward) over one batch.
struct LossResult {
  ops::LossTotals loss;  // mean cross-entropy over the targets ≥ 0, and their count (read when needed)
  Tensor predictions;    // [batch·L] i32 argmax, for accuracy metrics
};

class LanguageModel {
 public:
  static std::unique_ptr<LanguageModel> from_checkpoint(const io::Checkpoint& checkpoint, const LoadOptions& options);
  static std::unique_ptr<LanguageModel> load(const std::string& dir, const LoadOptions& options);
  // Fresh initialisation as MAMBA.md describes (S4D-real A, inverse-softplus dt bias, scaled out_proj).
  static std::unique_ptr<LanguageModel> initialize(const io::ModelConfig& config, uint64_t seed, Device device);

  const io::ModelConfig& config() const { return config_; }
  int64_t vocab_rows() const;  // embedding rows (logit columns)
  Device device() const { return device_; }
  std::vector<Parameter>& parameters() { return parameters_; }
  Parameter& parameter(const std::string& name);
  int64_t parameter_count() const;
  int64_t parameter_bytes() const;
  // Converts the weight matrices (projections, embedding, LM head) to `dtype` (f32, bf16, f16).
  void convert_weight_matrices(DType dtype);
  // Inference: copies each weight matrix to the row stride its device's decode product reads
  // fastest (ops::decode_row_stride: on the CPU one cache line of padding after rows a multiple of
  // 2 KiB long; nothing changes on CUDA). The pages of a memory-mapped original are given back to
  // the kernel, so the process does not hold the weights twice. Training reads contiguous
  // weights: call this only on a model that will not be trained.
  void lay_out_for_decode();
  // Mixed precision (CUDA): weight matrices stay float32 for the optimiser, products read bf16
  // copies of them (bf16 compute, float32 accumulation and master weights).
  void use_mixed_precision();
  // Tensors by Hugging Face name as stored by save_checkpoint (tied LM head omitted), in host memory.
  io::TensorMap state_dict() const;

  // Full forward: ids [batch, L] (i32 or i64) → logits [batch, L, V] f32 (only the last position
  // of each sequence, [batch, 1, V], when last_only; with `lengths`, position lengths[b]−1).
  Tensor forward(const Tensor& ids, bool last_only = false, const Tensor& lengths = {});

  // Training: loss of predicting targets [batch, L] (i32, −1 = ignored) from ids [batch, L];
  // with_grad accumulates gradients into each Parameter::grad (call enable_grad first). Ids and
  // targets on the host are checked there and uploaded without waiting for the GPU, which then
  // runs the whole step without the host waiting for it.
  // On CUDA a pass with gradients over a batch on the host is recorded as a CUDA graph at its
  // second call for a batch shape and replayed after (set_training_recording(false): every pass eager).
  LossResult forward_backward(const Tensor& ids, const Tensor& targets, bool with_grad);
  void set_training_recording(bool on) { record_training_ = on; }
  void enable_grad();
  // Zeroes the gradients. With next_pass_overwrites, those that the next pass with gradients writes
  // whole as products (the mixers' weight matrices and the LM head: the larger part of the
  // parameters) are left as they are, and that pass writes them instead of adding to them: one
  // pass a step then skips their zeroing and, on CUDA, the products' reads of the old values.
  // Passes after it add as usual; for several passes a step (gradient accumulation) leave it off,
  // since a recorded pass is kept for one of the two ways at a time.
  void zero_grad(bool next_pass_overwrites = false);
  // Call after changing parameter values in place (an optimiser step): drops derived caches and
  // remakes the bf16 compute copies, unless the caller already rewrote them in place
  // (compute_copies_current: train::Optimizer::step does).
  void parameters_changed(bool compute_copies_current = false);

  // Generation: prefill consumes ids [batch, L] (right-padded; `lengths` optional) in chunks of
  // `chunk` positions that carry the state, and returns the logits [batch, V] at each
  // sequence's last position. step consumes one token per sequence, ids [batch].
  InferenceState new_state(int64_t batch) const;
  // On CUDA a full chunk without `lengths` is recorded as a CUDA graph the second time its shape
  // [batch, chunk] comes (from any state) and replayed after, until another shape comes.
  Tensor prefill(InferenceState& state, const Tensor& ids, const Tensor& lengths = {}, int64_t chunk = 2048);
  // On CUDA the step is recorded as a CUDA graph at the second call for a state and replayed after.
  Tensor step(InferenceState& state, const Tensor& ids);
  // `steps` greedy steps from ids [batch] (checked as step checks them): each step's argmax over
  // the vocabulary is the next step's input where the logits are, so on CUDA the host queues the
  // steps without waiting for any of them (as the official generation loop does) and copies the
  // chosen ids back once. Returns them as [steps, batch] i32 on the host.
  Tensor greedy_steps(InferenceState& state, const Tensor& ids, int64_t steps);
  // set_inference_recording(false) runs every prefill chunk and step eagerly (e.g. to measure what
  // the graphs save).
  void set_inference_recording(bool on) { record_inference_ = on; }
  // Where a decode step runs all layers as one kernel (ops::decode_stack_step): by
  // default where that is expected to be faster (ops::decode_stack_pays), else wherever the kernel
  // takes the model, or never (to compare the paths).
  enum class DecodeStack { where_faster, wherever_taken, never };
  void set_decode_stack(DecodeStack use) {
    decode_stack_ = use;
    ++weights_version_;  // a recorded step of the other path is not replayed
  }

 public:
  struct Impl;  // layers bound to the parameters; defined in the .cpp

 private:
  LanguageModel(io::ModelConfig config, Device device);
  io::ModelConfig config_;
  Device device_;
  std::vector<Parameter> parameters_;
  std::shared_ptr<Impl> impl_;
  Tensor grad_buffer_;               // every Parameter::grad is a view of it, so zero_grad is one fill
  int64_t product_grads_begin_ = 0;  // in grad_buffer_: the gradients a pass may overwrite come last
  bool overwrite_next_pass_ = false;
  uint64_t weights_version_ = 0;  // bumped by parameters_changed: recorded steps read the old weights
  bool record_inference_ = true;
  bool record_training_ = true;
  DecodeStack decode_stack_ = DecodeStack::where_faster;
  // The weights version and batch decode_stack_applies_ is for.
  uint64_t decode_stack_decided_for_ = ~uint64_t(0);
  int64_t decode_stack_decided_batch_ = 0;
  bool decode_stack_applies_ = false;
  std::shared_ptr<PrefillRecording> prefill_recording_;
  std::shared_ptr<TrainingRecording> training_recording_;
  Tensor step_eager(InferenceState& state, const Tensor& ids, bool ids_checked);
  // The layers of a step as one kernel where ops::decode_stack_step takes them.
  std::optional<ops::DecodeStackOutputs> decode_stack_step(InferenceState& state, const Tensor& x);
  // The step on checked ids that are on the model's device already (the recorded graph's input
  // is filled by a device copy unless the ids are that input already; nothing waits for the GPU).
  // With copy_logits false a replayed step returns the recording's own logits, which the next
  // replay overwrites.
  Tensor step_checked(InferenceState& state, const Tensor& device_ids, bool copy_logits = true);
  // One full prefill chunk (ids checked, on the host) through the recorded graph of its shape.
  void recorded_prefill_chunk(InferenceState& state, const Tensor& host_ids, Tensor& h, Tensor& residual);
  // ids and targets on this model's device; `checked`: their values were checked on the host.
  // overwrite: the pass writes the product gradients instead of adding to them (zero_grad).
  LossResult queue_forward_backward(const Tensor& ids, const Tensor& targets, bool with_grad, bool checked,
                                    bool overwrite = false);
  LossResult recorded_forward_backward(const Tensor& host_ids, const Tensor& host_targets, bool overwrite);
  // Whether a pass with gradients writes p's whole gradient as a product before anything adds to it.
  bool gradient_written_by_product(const Parameter& p) const;

 public:
  ~LanguageModel();
};

}  // namespace mamba::model

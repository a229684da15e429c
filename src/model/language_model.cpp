#include "model/language_model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/rng.h"
#include "model/mamba1_mixer.h"
#include "ops/argmax.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/linear.h"
#include "ops/norm.h"

namespace mamba::model {

namespace {

std::string layer_prefix(int64_t i) { return "backbone.layers." + std::to_string(i) + "."; }

// Weight matrices keep a 16-bit stored precision; everything small runs in float32.
bool is_weight_matrix(const std::string& name) {
  for (const char* suffix :
       {"in_proj.weight", "x_proj.weight", "dt_proj.weight", "out_proj.weight", "embeddings.weight", "lm_head.weight"})
    if (name.size() >= std::string(suffix).size() && name.ends_with(suffix)) return true;
  return false;
}

bool decays(const std::string& name) {
  return !(name.ends_with(".bias") || name.ends_with("A_log") || name.ends_with("lti_B") || name.ends_with("lti_C") ||
           name.ends_with(".D") || name.ends_with("norm.weight") || name.ends_with("norm_f.weight"));
}

Tensor convert_if(const Tensor& t, DType dtype) { return t.dtype() == dtype ? t : ops::convert(t, dtype); }
Tensor as_float32(const Tensor& t) { return convert_if(t, DType::f32); }

Tensor ids_to_i32(const Tensor& ids, const char* what) {
  MAMBA_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, what, ": token ids must be i32 or i64, got ",
              dtype_name(ids.dtype()));
  return ids.dtype() == DType::i32 ? ids : ids.to(DType::i32);
}

}  // namespace

int64_t InferenceState::bytes() const {
  int64_t total = 0;
  for (const Tensor& t : conv) total += int64_t(t.nbytes());
  for (const Tensor& t : ssm) total += int64_t(t.nbytes());
  return total;
}

struct LanguageModel::Impl {
  std::vector<Mamba1Mixer> mixers;
  std::vector<Parameter*> norms;
  Parameter* embedding = nullptr;
  Parameter* norm_f = nullptr;
  Parameter* lm_head = nullptr;    // the embedding when tied
  DType activations = DType::f32;  // see choose_activations

  // What a training forward keeps for backward.
  struct Saved {
    Tensor ids;
    std::vector<ops::NormInputs> norm_in;
    std::vector<ops::NormOutputs> norm_out;
    std::vector<Mamba1Activations> mixer;
    ops::NormInputs final_in;
    ops::NormOutputs final_out;
  };
};

LanguageModel::LanguageModel(io::ModelConfig config, Device device)
    : config_(std::move(config)), device_(device), impl_(std::make_shared<Impl>()) {
  const io::ModelConfig& c = config_;
  for (io::LayerKind kind : c.layer_kinds())
    MAMBA_CHECK(kind == io::LayerKind::mamba1, "model_type '", c.model_type,
                "': only Mamba-1 layers are supported yet (Mamba-2 and attention layers are not)");
  MAMBA_CHECK(c.d_intermediate == 0, "config d_intermediate ", c.d_intermediate,
              ": MLP layers after the mixer are not supported yet");
  MAMBA_CHECK(c.rms_norm, "LayerNorm models (rms_norm: false) are not supported yet");

  auto add = [&](const std::string& name, Shape shape) {
    parameters_.push_back(Parameter{name, Tensor{}, Tensor{}, decays(name), Tensor{}});
    parameters_.back().value = Tensor::empty(shape, DType::f32, Device::cpu);
  };
  const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  parameters_.reserve(size_t(4 + 12 * c.n_layer));
  add("backbone.embeddings.weight", {c.padded_vocab_size(), d});
  for (int64_t i = 0; i < c.n_layer; ++i) {
    std::string p = layer_prefix(i);
    add(p + "norm.weight", {d});
    add(p + "mixer.in_proj.weight", {2 * D, d});
    if (c.use_bias) add(p + "mixer.in_proj.bias", {2 * D});
    add(p + "mixer.conv1d.weight", {D, 1, K});
    if (c.use_conv_bias) add(p + "mixer.conv1d.bias", {D});
    if (c.no_selection) {
      add(p + "mixer.lti_B", {D, N});
      add(p + "mixer.lti_C", {D, N});
    } else {
      add(p + "mixer.x_proj.weight", {R + 2 * N, D});
      add(p + "mixer.dt_proj.weight", {D, R});
    }
    add(p + "mixer.dt_proj.bias", {D});
    add(p + "mixer.A_log", {D, N});
    add(p + "mixer.D", {D});
    add(p + "mixer.out_proj.weight", {d, D});
    if (c.use_bias) add(p + "mixer.out_proj.bias", {d});
  }
  add("backbone.norm_f.weight", {d});
  if (!c.tie_embeddings) add("lm_head.weight", {c.padded_vocab_size(), d});
}

LanguageModel::~LanguageModel() = default;

Parameter& LanguageModel::parameter(const std::string& name) {
  for (Parameter& p : parameters_)
    if (p.name == name) return p;
  fail("model has no parameter named '", name, "'");
}

// Activations between kernels are bf16 on the GPU when the products read bf16 weights (half the
// bytes, and no conversion before each product; the residual stream stays float32), float32
// otherwise.
static void choose_activations(LanguageModel& model, LanguageModel::Impl& impl) {
  const Parameter* in_proj = impl.mixers.empty() ? nullptr : impl.mixers[0].weights().in_proj_weight;
  const bool bf16 =
      ops::bf16_activations_supported(model.device()) && in_proj && in_proj->for_compute().dtype() == DType::bf16;
  impl.activations = bf16 ? DType::bf16 : DType::f32;
}

// Wires the mixers and norms to the parameter list (after values are final).
static void bind(LanguageModel& model, LanguageModel::Impl& impl) {
  const io::ModelConfig& c = model.config();
  auto find = [&](const std::string& name) -> Parameter* {
    for (Parameter& p : model.parameters())
      if (p.name == name) return &p;
    return nullptr;
  };
  impl.mixers.clear();
  impl.norms.clear();
  impl.embedding = find("backbone.embeddings.weight");
  impl.norm_f = find("backbone.norm_f.weight");
  impl.lm_head = c.tie_embeddings ? impl.embedding : find("lm_head.weight");
  for (int64_t i = 0; i < c.n_layer; ++i) {
    std::string p = layer_prefix(i) + "mixer.";
    Mamba1Weights w;
    w.in_proj_weight = find(p + "in_proj.weight");
    w.in_proj_bias = find(p + "in_proj.bias");
    w.conv_weight = find(p + "conv1d.weight");
    w.conv_bias = find(p + "conv1d.bias");
    w.x_proj_weight = find(p + "x_proj.weight");
    w.dt_proj_weight = find(p + "dt_proj.weight");
    w.dt_proj_bias = find(p + "dt_proj.bias");
    w.A_log = find(p + "A_log");
    w.D = find(p + "D");
    w.out_proj_weight = find(p + "out_proj.weight");
    w.out_proj_bias = find(p + "out_proj.bias");
    w.lti_B = find(p + "lti_B");
    w.lti_C = find(p + "lti_C");
    impl.mixers.emplace_back(c, w);
    impl.norms.push_back(find(layer_prefix(i) + "norm.weight"));
  }
  choose_activations(model, impl);
}

std::unique_ptr<LanguageModel> LanguageModel::from_checkpoint(const io::Checkpoint& checkpoint,
                                                              const LoadOptions& options) {
  std::unique_ptr<LanguageModel> model(new LanguageModel(checkpoint.config, options.device));
  for (Parameter& p : model->parameters_) {
    auto it = checkpoint.tensors.find(p.name);
    MAMBA_CHECK(it != checkpoint.tensors.end(), checkpoint.weights_path, ": missing tensor '", p.name, "' (shape ",
                shape_string(p.value.shape()), ")");
    const Tensor& stored = it->second;
    MAMBA_CHECK(stored.shape() == p.value.shape(), checkpoint.weights_path, ": tensor '", p.name, "' has shape ",
                shape_string(stored.shape()), ", expected ", shape_string(p.value.shape()), " from config.json");
    MAMBA_CHECK(dtype_is_float(stored.dtype()), checkpoint.weights_path, ": tensor '", p.name, "' has dtype ",
                dtype_name(stored.dtype()), ", expected a float type");
    DType wanted = DType::f32;
    if (is_weight_matrix(p.name)) wanted = options.keep_stored_dtype ? stored.dtype() : options.weight_dtype;
    if (wanted == DType::f64) wanted = DType::f32;
    // A view of a memory-mapped file is used as is when nothing needs converting or moving.
    if (stored.dtype() == wanted && options.device == Device::cpu)
      p.value = stored;
    else
      p.value = stored.to(wanted).to(options.device);
  }
  bind(*model, *model->impl_);
  return model;
}

std::unique_ptr<LanguageModel> LanguageModel::load(const std::string& dir, const LoadOptions& options) {
  return from_checkpoint(io::load_checkpoint(dir), options);
}

std::unique_ptr<LanguageModel> LanguageModel::initialize(const io::ModelConfig& config, uint64_t seed, Device device) {
  std::unique_ptr<LanguageModel> model(new LanguageModel(config, device));
  const io::ModelConfig& c = model->config_;
  Rng rng(seed);
  auto fill = [&](Parameter& p, auto draw) {
    float* v = p.value.data<float>();
    for (int64_t i = 0; i < p.value.numel(); ++i) v[i] = float(draw(i));
  };
  for (Parameter& p : model->parameters_) {
    const Shape& s = p.value.shape();
    if (p.name.ends_with("embeddings.weight") || p.name == "lm_head.weight") {
      fill(p, [&](int64_t) { return c.initializer_range * rng.normal(); });
    } else if (p.name.ends_with("A_log")) {
      fill(p, [&](int64_t i) { return std::log(double(i % c.d_state + 1)); });  // S4D-real: A = −(n+1)
    } else if (p.name.ends_with("mixer.D") || p.name.ends_with("norm.weight") || p.name.ends_with("norm_f.weight")) {
      fill(p, [](int64_t) { return 1.0; });
    } else if (p.name.ends_with("dt_proj.weight")) {
      double bound = std::pow(double(c.dt_rank), -0.5) * c.time_step_scale;
      fill(p, [&](int64_t) { return rng.uniform(-bound, bound); });
    } else if (p.name.ends_with("dt_proj.bias")) {
      // dt log-uniform in [min, max], then the inverse of softplus so that softplus(bias) = dt.
      fill(p, [&](int64_t) {
        double dt = std::exp(rng.uniform(std::log(c.time_step_min), std::log(c.time_step_max)));
        dt = std::max(dt, c.time_step_floor);
        return dt + std::log(-std::expm1(-dt));
      });
    } else if (p.name.ends_with("lti_B")) {
      fill(p, [](int64_t) { return 1.0; });  // S4D's B
    } else if (p.name.ends_with("lti_C")) {
      fill(p, [&](int64_t) { return rng.normal() / std::sqrt(double(c.d_state)); });
    } else if (p.name.ends_with(".bias")) {
      fill(p, [](int64_t) { return 0.0; });
    } else {
      // PyTorch's default (Kaiming-uniform, a = √5): U(−1/√fan_in, 1/√fan_in).
      int64_t fan_in = p.value.numel() / s[0];
      double bound = 1.0 / std::sqrt(double(fan_in));
      if (p.name.ends_with("out_proj.weight") && c.rescale_prenorm_residual) bound /= std::sqrt(double(c.n_layer));
      fill(p, [&](int64_t) { return rng.uniform(-bound, bound); });
    }
    if (device != Device::cpu) p.value = p.value.to(device);
  }
  bind(*model, *model->impl_);
  return model;
}

int64_t LanguageModel::vocab_rows() const { return config_.padded_vocab_size(); }

int64_t LanguageModel::parameter_count() const {
  int64_t n = 0;
  for (const Parameter& p : parameters_) n += p.value.numel();
  return n;
}

int64_t LanguageModel::parameter_bytes() const {
  int64_t n = 0;
  for (const Parameter& p : parameters_) n += int64_t(p.value.nbytes());
  return n;
}

void LanguageModel::convert_weight_matrices(DType dtype) {
  for (Parameter& p : parameters_)
    if (is_weight_matrix(p.name) && p.value.dtype() != dtype) p.value = p.value.to(dtype);
  parameters_changed();
  choose_activations(*this, *impl_);
}

void LanguageModel::lay_out_for_decode() {
  for (Parameter& p : parameters_) {
    if (!is_weight_matrix(p.name) || p.value.ndim() != 2 || !p.value.is_contiguous()) continue;
    const int64_t stride = ops::decode_row_stride(p.value);
    if (stride == p.value.size(1)) continue;
    const Tensor original = p.value;
    p.value = original.with_row_stride(stride);
    page_out_host_memory(original.raw(), original.nbytes());
  }
  parameters_changed();
}

io::TensorMap LanguageModel::state_dict() const {
  io::TensorMap out;
  for (const Parameter& p : parameters_) out[p.name] = p.value.is_contiguous() ? on_host(p.value) : p.value.clone();
  return out;
}

bool LanguageModel::gradient_written_by_product(const Parameter& p) const {
  // The LM head's product comes first in a pass: a tied embedding's lookups add after it.
  if (&p == impl_->lm_head) return true;
  for (const Mamba1Mixer& m : impl_->mixers)
    for (const Parameter* written : m.product_gradients())
      if (written == &p) return true;
  return false;
}

void LanguageModel::enable_grad() {
  if (grad_buffer_.defined()) return;
  // Views start at multiples of 64 elements (256 bytes), as separate allocations would.
  constexpr int64_t kAlign = 64;
  auto padded = [](int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  int64_t total = 0;
  for (const Parameter& p : parameters_) total += padded(p.value.numel());
  grad_buffer_ = Tensor::zeros({total}, DType::f32, device_);
  // The gradients that products write go last, so zero_grad(true) zeroes one leading range.
  int64_t offset = 0;
  for (bool by_product : {false, true}) {
    if (by_product) product_grads_begin_ = offset;
    for (Parameter& p : parameters_) {
      if (gradient_written_by_product(p) != by_product) continue;
      p.grad = grad_buffer_.slice(offset, offset + p.value.numel()).view(p.value.shape());
      offset += padded(p.value.numel());
    }
  }
}

void LanguageModel::use_mixed_precision() {
  MAMBA_CHECK(ops::bf16_activations_supported(device_),
              "mixed-precision (bf16) training needs bf16 activations, which ", device_name(device_),
              " ops do not take; train in f32 there");
  for (Parameter& p : parameters_) {
    if (!is_weight_matrix(p.name)) continue;
    MAMBA_CHECK(p.value.dtype() == DType::f32, "mixed precision keeps float32 master weights, but ", p.name, " is ",
                dtype_name(p.value.dtype()));
    p.compute = ops::convert(p.value, DType::bf16);
  }
  choose_activations(*this, *impl_);
}

void LanguageModel::parameters_changed(bool compute_copies_current) {
  ++weights_version_;
  for (Mamba1Mixer& m : impl_->mixers) m.forget_derived();
  if (compute_copies_current) return;
  for (Parameter& p : parameters_)
    if (p.compute.defined()) p.compute = ops::convert(p.value, p.compute.dtype());
}

void LanguageModel::zero_grad(bool next_pass_overwrites) {
  if (!grad_buffer_.defined()) return;
  overwrite_next_pass_ = next_pass_overwrites;
  if (next_pass_overwrites)
    grad_buffer_.slice(0, product_grads_begin_).zero_();
  else
    grad_buffer_.zero_();
}

InferenceState LanguageModel::new_state(int64_t batch) const {
  InferenceState s;
  s.batch = batch;
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    s.conv.push_back(Tensor::zeros({batch, config_.d_inner, config_.d_conv - 1}, DType::f32, device_));
    s.ssm.push_back(Tensor::zeros({batch, config_.d_inner, config_.d_state}, DType::f32, device_));
  }
  return s;
}

namespace {

// The residual stream through every block, before the final norm. Returns {h, residual} of the
// last block as [rows, d]; with `state`, each layer continues from and updates its states.
struct Trunk {
  Tensor h, residual;
};

Trunk run_trunk(const LanguageModel::Impl& impl, const io::ModelConfig& c, const Tensor& ids, const Tensor& lengths,
                InferenceState* state, LanguageModel::Impl::Saved* saved, bool ids_checked = false) {
  const int64_t batch = ids.size(0), length = ids.size(1), rows = batch * length;
  Tensor h = ops::embedding_forward(impl.embedding->value, ids.view({rows}), ids_checked);
  if (h.dtype() != impl.activations) h = ops::convert(h, impl.activations);
  Tensor residual;
  for (size_t i = 0; i < impl.mixers.size(); ++i) {
    ops::NormInputs norm_in{h, residual, impl.norms[i]->value, {}, float(c.norm_eps), ops::NormKind::rms};
    ops::NormOutputs normed = ops::add_norm_forward(norm_in);
    Mamba1Activations* keep = nullptr;
    if (saved) {
      saved->norm_in.push_back(norm_in);
      saved->norm_out.push_back(normed);
      saved->mixer.emplace_back();
      keep = &saved->mixer.back();
    }
    Tensor* conv_state = state ? &state->conv[i] : nullptr;
    Tensor* ssm_state = state ? &state->ssm[i] : nullptr;
    h = impl.mixers[i]
            .forward(normed.out.view({batch, length, c.d_model}), lengths, conv_state, ssm_state, keep)
            .view({rows, c.d_model});
    residual = normed.residual_out;
  }
  return {h, residual};
}

}  // namespace

Tensor LanguageModel::forward(const Tensor& ids_in, bool last_only, const Tensor& lengths) {
  MAMBA_CHECK(ids_in.ndim() == 2, "forward: ids must be [batch, length], got ", shape_string(ids_in.shape()));
  if (last_only) {
    InferenceState state = new_state(ids_in.size(0));
    return prefill(state, ids_in, lengths).view({ids_in.size(0), 1, vocab_rows()});
  }
  Tensor ids = ids_to_i32(ids_in, "forward").to(device_);
  Tensor lens = lengths.defined() ? lengths.to(DType::i32).to(device_) : Tensor{};
  Trunk t = run_trunk(*impl_, config_, ids, lens, nullptr, nullptr);
  ops::NormOutputs f =
      ops::add_norm_forward({t.h, t.residual, impl_->norm_f->value, {}, float(config_.norm_eps), ops::NormKind::rms});
  Tensor logits = as_float32(ops::linear_forward(f.out, impl_->lm_head->for_compute()));
  return logits.view({ids.size(0), ids.size(1), vocab_rows()});
}

LossResult LanguageModel::forward_backward(const Tensor& ids_in, const Tensor& targets_in, bool with_grad) {
  MAMBA_CHECK(ids_in.ndim() == 2 && targets_in.shape() == ids_in.shape(), "training batch: ids ",
              shape_string(ids_in.shape()), " and targets ", shape_string(targets_in.shape()),
              " must both be [batch, length]");
  if (with_grad)
    MAMBA_CHECK(grad_buffer_.defined(), "forward_backward: call enable_grad() before asking for gradients");
  // Checked where they are: on the host that costs no wait for the GPU.
  const bool checked_on_host = ids_in.device() == Device::cpu && targets_in.device() == Device::cpu;
  Tensor ids = ids_to_i32(ids_in, "training batch");
  Tensor targets = ids_to_i32(targets_in, "training targets");
  if (checked_on_host) {
    ops::check_token_ids(ids, vocab_rows());
    ops::check_targets(targets, vocab_rows());
  }
  const bool overwrite = with_grad && std::exchange(overwrite_next_pass_, false);
  if (checked_on_host && with_grad && record_training_ && RecordedWork::supported(device_))
    return recorded_forward_backward(ids, targets, overwrite);
  return queue_forward_backward(ids.to(device_), targets.to(device_), with_grad, checked_on_host, overwrite);
}

LossResult LanguageModel::queue_forward_backward(const Tensor& ids, const Tensor& targets, bool with_grad, bool checked,
                                                 bool overwrite) {
  const int64_t rows = ids.numel();
  Impl::Saved saved;
  Trunk t = run_trunk(*impl_, config_, ids, {}, nullptr, with_grad ? &saved : nullptr, checked);
  ops::NormInputs final_in{t.h, t.residual, impl_->norm_f->value, {}, float(config_.norm_eps), ops::NormKind::rms};
  ops::NormOutputs final_out = ops::add_norm_forward(final_in);
  Tensor* dlm_head = with_grad ? &impl_->lm_head->grad : nullptr;
  ops::CrossEntropyResult ce = ops::lm_head_cross_entropy(
      final_out.out, impl_->lm_head->for_compute(), targets.view({rows}), with_grad, dlm_head, checked, overwrite);
  LossResult result{ce.loss, ce.predictions};
  if (!with_grad) return result;

  // Gradients reaching an activation take its dtype (bf16 under mixed precision); the residual
  // stream's gradient ds stays float32.
  const DType act = impl_->activations;
  // The norms add their weight gradients into the parameters' gradients directly.
  ops::NormGrads g = ops::add_norm_backward(final_in, final_out, convert_if(ce.dhidden, act), {}, &impl_->norm_f->grad);
  // g.ds: the residual stream's gradient after block i; g.dx: the same in the dtype of mixer i's output.
  for (size_t i = impl_->mixers.size(); i-- > 0;) {
    Tensor dnormed = impl_->mixers[i].backward(g.dx, saved.mixer[i], overwrite);
    g = ops::add_norm_backward(saved.norm_in[i], saved.norm_out[i], dnormed.view({rows, config_.d_model}), g.ds,
                               &impl_->norms[i]->grad);
  }
  ops::embedding_backward(ids.view({rows}), g.ds, impl_->embedding->grad, checked);
  return result;
}

// A training pass on CUDA recorded once as a CUDA graph: one launch replaces the ~800 kernels and
// products of a step. It reads `ids` and `targets`, kept here and written before each replay,
// accumulates into the gradients (or overwrites the product gradients: zero_grad) and writes
// `result`; it is recorded again when the batch's shape, that choice or the memory of any
// parameter, compute copy or gradient changes.
struct TrainingRecording {
  std::vector<const void*> buffers;
  bool overwrite = false;
  Tensor ids, targets;  // [batch, L] i32 on the GPU
  int64_t eager_passes = 0;
  LossResult result;
  std::unique_ptr<RecordedWork> work;
};

LossResult LanguageModel::recorded_forward_backward(const Tensor& ids, const Tensor& targets, bool overwrite) {
  std::vector<const void*> buffers;
  for (const Parameter& p : parameters_)
    buffers.insert(buffers.end(), {p.value.raw(), p.compute.defined() ? p.compute.raw() : nullptr, p.grad.raw()});
  std::shared_ptr<TrainingRecording>& rec = training_recording_;
  if (!rec || rec->buffers != buffers || rec->overwrite != overwrite || rec->ids.shape() != ids.shape()) {
    rec.reset();  // its memory goes back before the new one takes any
    rec = std::make_shared<TrainingRecording>();
    rec->buffers = buffers;
    rec->overwrite = overwrite;
    rec->ids = Tensor::empty(ids.shape(), DType::i32, device_);
    rec->targets = Tensor::empty(targets.shape(), DType::i32, device_);
  }
  rec->ids.copy_from(ids);
  rec->targets.copy_from(targets);
  if (!rec->work) {
    // The first pass runs as usual: it fills the caches (product plans, memory blocks) that a
    // recording must not create.
    if (rec->eager_passes++ == 0) return queue_forward_backward(rec->ids, rec->targets, true, true, overwrite);
    TrainingRecording& r = *rec;
    r.work = std::make_unique<RecordedWork>(
        [&] { r.result = queue_forward_backward(r.ids, r.targets, true, true, overwrite); });
  }
  rec->work->replay();
  // Copies: the next replay rewrites the recording's own (gradient accumulation reads them later).
  return {{rec->result.loss.values.clone()}, rec->result.predictions.clone()};
}

Tensor LanguageModel::prefill(InferenceState& state, const Tensor& ids_in, const Tensor& lengths, int64_t chunk) {
  MAMBA_CHECK(ids_in.ndim() == 2, "prefill: ids must be [batch, length], got ", shape_string(ids_in.shape()));
  MAMBA_CHECK(state.batch == ids_in.size(0), "prefill: state holds ", state.batch, " sequences, ids ", ids_in.size(0));
  MAMBA_CHECK(chunk > 0, "prefill: chunk must be positive");
  const int64_t batch = ids_in.size(0), length = ids_in.size(1), d = config_.d_model;
  Tensor ids = ids_to_i32(ids_in, "prefill").to(Device::cpu);
  // Checked here, on the host, so no chunk's lookup copies its ids back to check them.
  ops::check_token_ids(ids, vocab_rows());
  std::vector<int64_t> lens(size_t(batch), length);
  if (lengths.defined()) {
    check_shape(lengths, {batch}, "prefill lengths");
    for (int64_t b = 0; b < batch; ++b) {
      lens[size_t(b)] = int64_t(on_host(lengths).item(b));
      MAMBA_CHECK(lens[size_t(b)] >= 1 && lens[size_t(b)] <= length, "prefill: length ", lens[size_t(b)],
                  " of sequence ", b, " is outside [1, ", length, "]");
    }
  }
  MAMBA_CHECK(length >= 1, "prefill: the prompt is empty");
  Tensor last_h = Tensor::empty({batch, d}, impl_->activations, device_);
  Tensor last_residual = Tensor::empty({batch, d}, DType::f32, device_);
  const int32_t* all_ids = ids.data<int32_t>();
  const bool ragged = lengths.defined();
  for (int64_t c0 = 0; c0 < length; c0 += chunk) {
    const int64_t c1 = std::min(length, c0 + chunk), width = c1 - c0;
    Tensor piece = Tensor::empty({batch, width}, DType::i32);
    Tensor piece_lengths = Tensor::empty({batch}, DType::i32);
    for (int64_t b = 0; b < batch; ++b) {
      std::copy(all_ids + b * length + c0, all_ids + b * length + c1, piece.data<int32_t>() + b * width);
      piece_lengths.data<int32_t>()[b] = int32_t(std::clamp<int64_t>(lens[size_t(b)] - c0, 0, width));
    }
    Trunk t;
    if (!ragged && width == chunk && record_inference_ && RecordedWork::supported(device_))
      recorded_prefill_chunk(state, piece, t.h, t.residual);
    else
      t = run_trunk(*impl_, config_, piece.to(device_), ragged ? piece_lengths.to(device_) : Tensor{}, &state, nullptr,
                    /*ids_checked=*/true);
    for (int64_t b = 0; b < batch; ++b) {
      int64_t last = lens[size_t(b)] - 1;
      if (last < c0 || last >= c1) continue;
      int64_t row = b * width + (last - c0);
      last_h.slice(b, b + 1).copy_from(t.h.slice(row, row + 1));
      last_residual.slice(b, b + 1).copy_from(t.residual.slice(row, row + 1));
    }
  }
  ops::NormOutputs f = ops::add_norm_forward(
      {last_h, last_residual, impl_->norm_f->value, {}, float(config_.norm_eps), ops::NormKind::rms});
  return as_float32(ops::linear_forward(f.out, impl_->lm_head->for_compute()));
}

// A full prefill chunk on CUDA, recorded once as a CUDA graph: one launch replaces the ~10
// kernels and products of every layer (their launch gaps were ≈ 5% of a 1.4b prefill). It reads
// `ids` and the states `conv_in`, `ssm_in` and writes `h`, `residual` and the next states
// `conv_out`, `ssm_out`, all kept here: a chunk copies the caller's states in and the next ones
// out (a launch each), so any state can use it, and the caller's state tensors keep their memory.
// Recorded again when the shape or the weights change.
struct PrefillRecording {
  int64_t batch = 0, width = 0;
  uint64_t weights_version = 0;
  int64_t eager_chunks = 0;
  Tensor ids;  // [batch, width] i32 on the GPU
  std::vector<Tensor> conv_in, ssm_in, conv_out, ssm_out;
  Tensor h, residual;
  std::unique_ptr<RecordedWork> work;
};

void LanguageModel::recorded_prefill_chunk(InferenceState& state, const Tensor& host_ids, Tensor& h, Tensor& residual) {
  const int64_t batch = host_ids.size(0), width = host_ids.size(1);
  std::shared_ptr<PrefillRecording>& rec = prefill_recording_;
  if (!rec || rec->batch != batch || rec->width != width || rec->weights_version != weights_version_) {
    rec.reset();  // its memory goes back before the new one takes any
    rec = std::make_shared<PrefillRecording>();
    rec->batch = batch;
    rec->width = width;
    rec->weights_version = weights_version_;
    rec->ids = Tensor::empty({batch, width}, DType::i32, device_);
  }
  if (!rec->work && rec->eager_chunks++ == 0) {
    // The first chunk of a shape runs as usual: it fills the caches (product plans, memory blocks,
    // A) that a recording must not create.
    rec->ids.copy_from(host_ids);
    Trunk t = run_trunk(*impl_, config_, rec->ids, {}, &state, nullptr, /*ids_checked=*/true);
    h = t.h, residual = t.residual;
    return;
  }
  PrefillRecording& r = *rec;
  if (r.conv_in.empty()) {  // once: a recording that failed (and threw) is tried again with them
    for (size_t i = 0; i < state.conv.size(); ++i) {
      r.conv_in.push_back(Tensor::empty(state.conv[i].shape(), DType::f32, device_));
      r.ssm_in.push_back(Tensor::empty(state.ssm[i].shape(), DType::f32, device_));
    }
  }
  r.ids.copy_from(host_ids);
  ops::copy_all_(r.conv_in, state.conv);
  ops::copy_all_(r.ssm_in, state.ssm);
  if (!r.work) {
    r.work = std::make_unique<RecordedWork>([&] {
      InferenceState recorded{batch, r.conv_in, r.ssm_in, nullptr};
      Trunk t = run_trunk(*impl_, config_, r.ids, {}, &recorded, nullptr, /*ids_checked=*/true);
      r.h = t.h, r.residual = t.residual;
      r.conv_out = recorded.conv, r.ssm_out = recorded.ssm;
    });
  }
  r.work->replay();
  ops::copy_all_(state.conv, r.conv_out);
  ops::copy_all_(state.ssm, r.ssm_out);
  // The recording's own: the next replay rewrites them, after what the caller queues now.
  h = r.h, residual = r.residual;
}

// The decode step on CUDA, recorded once as a CUDA graph: one launch replaces the ~15 kernels and
// products of every layer. It reads `ids` and writes `logits`, both kept here, and updates the
// state tensors in place; it is recorded again when they or the weights change.
struct StepRecording {
  const LanguageModel* model = nullptr;
  std::vector<const void*> state_buffers;
  uint64_t weights_version = 0;
  int64_t eager_steps = 0;
  Tensor ids;     // [batch] i32 on the GPU
  Tensor logits;  // [batch, V]
  std::unique_ptr<RecordedWork> work;
};

Tensor LanguageModel::step(InferenceState& state, const Tensor& ids_in) {
  MAMBA_CHECK(ids_in.ndim() == 1 && ids_in.size(0) == state.batch, "step: expected ids [", state.batch, "], got ",
              shape_string(ids_in.shape()));
  Tensor ids = ids_to_i32(ids_in, "step");
  if (!record_inference_ || !RecordedWork::supported(device_))
    return step_eager(state, ids.to(device_), /*ids_checked=*/false);

  Tensor host_ids = on_host(ids);
  for (int64_t b = 0; b < state.batch; ++b) {
    const int32_t id = host_ids.data<int32_t>()[b];
    MAMBA_CHECK(id >= 0 && id < vocab_rows(), "step: token id ", id, " of sequence ", b,
                " is outside the vocabulary [0, ", vocab_rows(), ")");
  }
  return step_checked(state, host_ids);
}

Tensor LanguageModel::step_checked(InferenceState& state, const Tensor& ids, bool copy_logits) {
  if (!record_inference_ || !RecordedWork::supported(device_))
    return step_eager(state, ids.to(device_), /*ids_checked=*/true);
  std::vector<const void*> buffers;
  for (size_t i = 0; i < state.conv.size(); ++i)
    buffers.insert(buffers.end(), {state.conv[i].raw(), state.ssm[i].raw()});
  std::shared_ptr<StepRecording>& rec = state.step_recording;
  if (!rec || rec->model != this || rec->state_buffers != buffers || rec->weights_version != weights_version_) {
    rec = std::make_shared<StepRecording>();
    rec->model = this;
    rec->state_buffers = buffers;
    rec->weights_version = weights_version_;
    rec->ids = Tensor::empty({state.batch}, DType::i32, device_);
  }
  if (ids.raw() != rec->ids.raw()) rec->ids.copy_from(ids);  // greedy_steps writes them in place
  if (!rec->work) {
    // The first step runs as usual: it fills the caches (product plans, memory blocks, A) that
    // a recording must not create.
    if (rec->eager_steps++ == 0) return step_eager(state, rec->ids, /*ids_checked=*/true);
    StepRecording& r = *rec;
    r.work = std::make_unique<RecordedWork>([&] { r.logits = step_eager(state, r.ids, /*ids_checked=*/true); });
  }
  rec->work->replay();
  return copy_logits ? rec->logits.clone() : rec->logits;
}

Tensor LanguageModel::greedy_steps(InferenceState& state, const Tensor& ids, int64_t steps) {
  MAMBA_CHECK(steps >= 0, "greedy_steps: the number of steps must not be negative, got ", steps);
  const int64_t vocab = config_.vocab_size;
  Tensor chosen = Tensor::empty({steps, state.batch}, DType::i32, device_);
  Tensor next = ids;
  for (int64_t s = 0; s < steps; ++s) {
    // Only the first ids come from the caller; the argmax's are inside the vocabulary. The argmax
    // is queued before the next replay overwrites the recording's logits, so they need no copy.
    const Tensor logits = s == 0 ? step(state, next) : step_checked(state, next, /*copy_logits=*/false);
    std::vector<Tensor> into{chosen.slice(s, s + 1).view({state.batch})};
    // A recorded step reads its ids from the recording's input: the argmax writes them there too.
    if (state.step_recording) into.push_back(state.step_recording->ids);
    ops::argmax_rows_into(logits, vocab, into);
    next = into.back();
  }
  return on_host(chosen);
}

std::optional<ops::DecodeStackOutputs> LanguageModel::decode_stack_step(InferenceState& state, const Tensor& x) {
  if (decode_stack_ == DecodeStack::never) return std::nullopt;
  // Whether the kernel applies depends on the weights, the geometry and the batch only: decided
  // once per weights version and batch, so that steps which do not use it (CPU, latency-bound
  // shapes) skip the checks.
  const bool decided = decode_stack_decided_for_ == weights_version_ && decode_stack_decided_batch_ == state.batch;
  if (decided && !decode_stack_applies_) return std::nullopt;
  decode_stack_decided_for_ = weights_version_;
  decode_stack_decided_batch_ = state.batch;
  decode_stack_applies_ = false;
  std::vector<ops::DecodeStackLayer> layers;
  for (size_t i = 0; i < impl_->mixers.size(); ++i) {
    auto layer = impl_->mixers[i].decode_stack_layer(impl_->norms[i]->value, state.conv[i], state.ssm[i]);
    if (!layer) return std::nullopt;
    layers.push_back(std::move(*layer));
  }
  if (!decided && decode_stack_ == DecodeStack::where_faster && !ops::decode_stack_pays(x, layers)) return std::nullopt;
  // decode_stack_step checks its inputs again (it declines what it does not take).
  auto stacked = ops::decode_stack_step(x, layers, float(config_.norm_eps));
  decode_stack_applies_ = stacked.has_value();
  return stacked;
}

Tensor LanguageModel::step_eager(InferenceState& state, const Tensor& ids, bool ids_checked) {
  Tensor h = convert_if(ops::embedding_forward(impl_->embedding->value, ids, ids_checked), impl_->activations);
  Tensor residual;
  if (auto stacked = decode_stack_step(state, h)) {
    h = stacked->out;
    residual = stacked->residual;
  } else {
    for (size_t i = 0; i < impl_->mixers.size(); ++i) {
      const ops::NormInputs block_input{
          h, residual, impl_->norms[i]->value, {}, float(config_.norm_eps), ops::NormKind::rms};
      h = impl_->mixers[i].step(block_input, state.conv[i], state.ssm[i], residual);
    }
  }
  ops::NormOutputs f =
      ops::add_norm_forward({h, residual, impl_->norm_f->value, {}, float(config_.norm_eps), ops::NormKind::rms});
  return as_float32(ops::linear_forward(f.out, impl_->lm_head->for_compute()));
}

}  // namespace mamba::model

#include "model/mamba1_mixer.h"

#include "model/language_model.h"
#include "ops/causal_conv1d.h"
#include "ops/elementwise.h"
#include "ops/in_projection_step.h"
#include "ops/linear.h"
#include "ops/lti_scan.h"
#include "ops/selective_scan.h"

namespace mamba::model {

namespace {
Tensor value_or_empty(const Parameter* p) { return p ? p->value : Tensor{}; }
Tensor* grad_or_null(Parameter* p) { return p && p->grad.defined() ? &p->grad : nullptr; }

// Adds a host-computed f32 tensor into a gradient buffer that may live on any device.
void accumulate(Tensor& grad, const Tensor& delta) {
  if (grad.device() == delta.device() && delta.dtype() == DType::f32) {
    ops::add_(grad, delta);
  } else {
    Tensor moved = Tensor::empty(grad.shape(), DType::f32, grad.device());
    moved.copy_from(delta);
    ops::add_(grad, moved);
  }
}
}  // namespace

Mamba1Mixer::Mamba1Mixer(const io::ModelConfig& config, const Mamba1Weights& weights)
    : d_model_(config.d_model),
      d_inner_(config.d_inner),
      d_state_(config.d_state),
      d_conv_(config.d_conv),
      dt_rank_(config.dt_rank),
      w_(weights) {}

Tensor Mamba1Mixer::conv_weight_2d() const { return w_.conv_weight->value.view({d_inner_, d_conv_}); }

Tensor Mamba1Mixer::A() const {
  if (!cached_A_.defined()) cached_A_ = ops::negative_exp(w_.A_log->value);
  return cached_A_;
}

Tensor Mamba1Mixer::forward(const Tensor& u, const Tensor& lengths, Tensor* conv_state, Tensor* ssm_state,
                            Mamba1Activations* keep) const {
  const int64_t batch = u.size(0), length = u.size(1), rows = batch * length;
  if (keep) cached_A_ = Tensor{};  // training: the parameters may have changed since the last call
  Tensor input = u.view({rows, d_model_});
  std::vector<Tensor> halves = ops::linear_forward_split(input, w_.in_proj_weight->for_compute(), {d_inner_, d_inner_},
                                                         value_or_empty(w_.in_proj_bias));
  Tensor x = halves[0].view({batch, length, d_inner_});
  Tensor z = halves[1].view({batch, length, d_inner_});

  ops::ConvInputs conv{
      x, conv_weight_2d(), value_or_empty(w_.conv_bias), conv_state ? *conv_state : Tensor{}, lengths, true};
  ops::ConvOutputs conv_out = ops::causal_conv1d_forward(conv);
  Tensor x_conv = conv_out.out;
  if (w_.lti_B) {
    MAMBA_CHECK(!conv_state && !ssm_state && !lengths.defined(),
                "the LTI ablation (no_selection) runs whole sequences only: prefill and decode are not supported");
    Tensor y = ops::lti_scan_forward(lti_inputs(x_conv, z));
    if (keep) {
      keep->input = input;
      keep->x = x;
      keep->z = z;
      keep->x_conv = x_conv;
      keep->y = y;
    }
    return ops::linear_forward(y.view({rows, d_inner_}), w_.out_proj_weight->for_compute(),
                               value_or_empty(w_.out_proj_bias))
        .view({batch, length, d_model_});
  }

  std::vector<Tensor> parts = ops::linear_forward_split(x_conv.view({rows, d_inner_}), w_.x_proj_weight->for_compute(),
                                                        {dt_rank_, d_state_, d_state_});
  Tensor delta = ops::linear_forward(parts[0], w_.dt_proj_weight->for_compute());

  ops::ScanInputs scan;
  scan.u = x_conv;
  scan.delta = delta.view({batch, length, d_inner_});
  scan.A = A();
  scan.B = parts[1].view({batch, length, d_state_});
  scan.C = parts[2].view({batch, length, d_state_});
  scan.D = w_.D->value;
  scan.z = z;
  scan.delta_bias = w_.dt_proj_bias->value;
  scan.delta_softplus = true;
  scan.initial_state = ssm_state ? *ssm_state : Tensor{};
  scan.lengths = lengths;
  scan.keep_chunk_states = keep != nullptr;  // spares the backward a pass over the inputs
  ops::ScanOutputs scanned = ops::selective_scan_forward(scan);

  Tensor out = ops::linear_forward(scanned.out.view({rows, d_inner_}), w_.out_proj_weight->for_compute(),
                                   value_or_empty(w_.out_proj_bias));
  if (conv_state) *conv_state = conv_out.final_state;
  if (ssm_state) *ssm_state = scanned.last_state;
  if (keep) {
    keep->input = input;
    keep->x = x;
    keep->z = z;
    keep->x_conv = x_conv;
    keep->dt_low = parts[0];
    keep->B = scan.B;
    keep->C = scan.C;
    keep->delta = scan.delta;
    keep->y = scanned.out;
    keep->A = scan.A;
    keep->lengths = lengths;
    keep->chunk_states = scanned.chunk_states;
  }
  return out.view({batch, length, d_model_});
}

ops::LtiScanInputs Mamba1Mixer::lti_inputs(const Tensor& x_conv, const Tensor& z) const {
  return {x_conv, z, A(), w_.lti_B->value, w_.lti_C->value, w_.D->value, w_.dt_proj_bias->value};
}

Tensor Mamba1Mixer::step(const ops::NormInputs& block_input, Tensor& conv_state, Tensor& ssm_state,
                         Tensor& residual_out) const {
  MAMBA_CHECK(!w_.lti_B, "the LTI ablation (no_selection) runs whole sequences only: decode is not supported");
  ops::InProjectionOutputs in =
      ops::in_projection_step({block_input, w_.in_proj_weight->for_compute(), value_or_empty(w_.in_proj_bias),
                               conv_weight_2d(), value_or_empty(w_.conv_bias)},
                              conv_state);
  residual_out = in.residual_out;
  // x_proj's δ rows, B and C stay side by side for the state update: no copy of the pieces.
  const Tensor delta_B_C = ops::linear_forward(in.x_conv, w_.x_proj_weight->for_compute());
  ops::ScanInputs scan;
  scan.u = in.x_conv;
  // dt_proj runs inside the state update: one kernel fewer per layer in a latency-bound step.
  scan.delta_proj = w_.dt_proj_weight->for_compute();
  scan.A = A();
  scan.D = w_.D->value;
  scan.z = in.z;
  scan.delta_bias = w_.dt_proj_bias->value;
  scan.delta_softplus = true;
  Tensor y = ops::selective_state_update_packed(scan, delta_B_C, ssm_state);
  return ops::linear_forward(y, w_.out_proj_weight->for_compute(), value_or_empty(w_.out_proj_bias));
}

std::optional<ops::DecodeStackLayer> Mamba1Mixer::decode_stack_layer(const Tensor& norm_weight,
                                                                     const Tensor& conv_state,
                                                                     const Tensor& ssm_state) const {
  if (w_.lti_B || w_.in_proj_bias || w_.out_proj_bias) return std::nullopt;
  if (!cached_x_proj_blocks_.defined())
    cached_x_proj_blocks_ = ops::decode_stack_x_proj_blocks(w_.x_proj_weight->for_compute(), d_model_);
  if (!cached_x_proj_blocks_.defined()) return std::nullopt;
  return ops::DecodeStackLayer{norm_weight,
                               w_.in_proj_weight->for_compute(),
                               conv_weight_2d(),
                               value_or_empty(w_.conv_bias),
                               cached_x_proj_blocks_,
                               w_.dt_proj_weight->for_compute(),
                               w_.dt_proj_bias->value,
                               A(),
                               w_.D->value,
                               w_.out_proj_weight->for_compute(),
                               conv_state,
                               ssm_state};
}

std::vector<const Parameter*> Mamba1Mixer::product_gradients() const {
  std::vector<const Parameter*> written{w_.in_proj_weight, w_.out_proj_weight};
  if (!w_.lti_B) written.insert(written.end(), {w_.x_proj_weight, w_.dt_proj_weight});
  return written;
}

Tensor Mamba1Mixer::backward(const Tensor& dout, const Mamba1Activations& saved, bool overwrite_product_grads) const {
  const int64_t batch = saved.x.size(0), length = saved.x.size(1), rows = batch * length;
  Tensor dy = ops::linear_backward(saved.y.view({rows, d_inner_}), w_.out_proj_weight->for_compute(),
                                   dout.view({rows, d_model_}), grad_or_null(w_.out_proj_weight),
                                   grad_or_null(w_.out_proj_bias), nullptr, overwrite_product_grads);

  if (w_.lti_B) {
    ops::LtiScanGrads lg =
        ops::lti_scan_backward(lti_inputs(saved.x_conv, saved.z), dy.view({batch, length, d_inner_}));
    accumulate_ssm_grads(lg.dA, A(), lg.dD, lg.ddelta_bias);
    accumulate(w_.lti_B->grad, lg.dB);
    accumulate(w_.lti_C->grad, lg.dC);
    return input_grad(dout, saved, lg.du.view({rows, d_inner_}), lg.dz, overwrite_product_grads);
  }
  ops::ScanInputs scan;
  scan.u = saved.x_conv;
  scan.delta = saved.delta;
  scan.A = saved.A;
  scan.B = saved.B;
  scan.C = saved.C;
  scan.D = w_.D->value;
  scan.z = saved.z;
  scan.delta_bias = w_.dt_proj_bias->value;
  scan.delta_softplus = true;
  scan.lengths = saved.lengths;
  scan.chunk_states = saved.chunk_states;
  ops::ScanGrads g = ops::selective_scan_backward(scan, dy.view({batch, length, d_inner_}));

  accumulate_ssm_grads(g.dA, saved.A, g.dD, g.ddelta_bias);

  Tensor ddt_low = ops::linear_backward(saved.dt_low, w_.dt_proj_weight->for_compute(), g.ddelta.view({rows, d_inner_}),
                                        grad_or_null(w_.dt_proj_weight), nullptr, nullptr, overwrite_product_grads);
  // x_conv feeds x_proj and the scan: x_proj's input gradient is added onto the scan's du.
  Tensor du = g.du.view({rows, d_inner_});
  Tensor dx_conv = ops::linear_backward_split(saved.x_conv.view({rows, d_inner_}), w_.x_proj_weight->for_compute(),
                                              {ddt_low, g.dB.view({rows, d_state_}), g.dC.view({rows, d_state_})},
                                              grad_or_null(w_.x_proj_weight), nullptr, &du, overwrite_product_grads);
  return input_grad(dout, saved, dx_conv, g.dz, overwrite_product_grads);
}

void Mamba1Mixer::accumulate_ssm_grads(const Tensor& dA, const Tensor& A, const Tensor& dD,
                                       const Tensor& ddelta_bias) const {
  // A = −exp(A_log), so dA_log = dA · A.
  if (Tensor* dA_log = grad_or_null(w_.A_log)) ops::add_product_(*dA_log, dA, A);
  if (Tensor* target = grad_or_null(w_.D)) accumulate(*target, dD);
  if (Tensor* target = grad_or_null(w_.dt_proj_bias)) accumulate(*target, ddelta_bias);
}

Tensor Mamba1Mixer::input_grad(const Tensor& dout, const Mamba1Activations& saved, const Tensor& dx_conv,
                               const Tensor& dz, bool overwrite_product_grads) const {
  const int64_t batch = saved.x.size(0), length = saved.x.size(1), rows = batch * length;
  ops::ConvInputs conv{saved.x, conv_weight_2d(), value_or_empty(w_.conv_bias), {}, saved.lengths, true};
  // The conv backward adds its weight and bias gradients into the parameters' gradients directly.
  Tensor* dw = grad_or_null(w_.conv_weight);
  Tensor dw_2d = dw ? dw->view({d_inner_, d_conv_}) : Tensor();
  ops::ConvGrads cg = ops::causal_conv1d_backward(conv, dx_conv.view({batch, length, d_inner_}), dw ? &dw_2d : nullptr,
                                                  grad_or_null(w_.conv_bias));

  return ops::linear_backward_split(
      saved.input, w_.in_proj_weight->for_compute(), {cg.dx.view({rows, d_inner_}), dz.view({rows, d_inner_})},
      grad_or_null(w_.in_proj_weight), grad_or_null(w_.in_proj_bias), nullptr, overwrite_product_grads);
}

}  // namespace mamba::model

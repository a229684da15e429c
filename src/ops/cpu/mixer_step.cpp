// The CPU decode step of a Mamba-1 mixer as one team run: the in-projection with its conv step,
// x_proj, the state update and out_proj are its phases, each waiting at a barrier for the one
// before. Each phase runs the work of its op's own entry point (ops/cpu/step_work.h) over the same
// chunks, so the outputs are bitwise those of the ops one after another.
#include "ops/mixer_step.h"

#include "core/threads.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/step_work.h"
#include "ops/linear.h"

namespace mamba::ops::cpu {

std::optional<MixerStepOutputs> mamba1_mixer_step(const MixerStep& in, Tensor& conv_state, Tensor& ssm_state) {
  // ops::mamba1_mixer_step has checked the in-projection's inputs and the shapes of W_x, W_δ, A.
  const int64_t batch = in.in_projection.norm.x.size(0), channels = in.in_projection.conv_weight.size(0);
  if (!in.out_proj_weight.defined() || !use_streaming_kernel(batch, channels, in.x_proj_weight.dtype()) ||
      !use_streaming_kernel(batch, channels, in.out_proj_weight.dtype()))
    return std::nullopt;
  std::optional<InProjectionWork> projection = prepare_in_projection_step(in.in_projection, conv_state);
  if (!projection) return std::nullopt;
  const int64_t R = in.dt_proj_weight.size(1), N = in.A.size(1);
  std::optional<ProductWork> x_proj =
      prepare_streaming_product(projection->out.x_conv, in.x_proj_weight, {}, {R, N, N});
  if (!x_proj) return std::nullopt;
  const ScanInputs scan = mixer_step_scan_inputs(in, projection->out, x_proj->pieces);
  check_step_inputs(scan, ssm_state);
  StateUpdateWork update = prepare_state_update(scan, ssm_state);
  check_linear_inputs(update.out, in.out_proj_weight, in.out_proj_bias);
  std::optional<ProductWork> out_proj =
      prepare_streaming_product(update.out, in.out_proj_weight, in.out_proj_bias, {in.out_proj_weight.size(0)});
  if (!out_proj) return std::nullopt;

  auto run = [](const RangeWork& work) { return [&work](int64_t begin, int64_t end, int) { work.run(begin, end); }; };
  run_team([&](Team& team) {
    team.for_chunks(projection->rows.items, projection->rows.chunk, run(projection->rows));
    team.barrier();
    team.for_chunks(x_proj->rows.items, x_proj->rows.chunk, run(x_proj->rows));
    team.barrier();
    team.for_ranges(update.blocks.items, run(update.blocks));
    team.barrier();
    team.for_chunks(out_proj->rows.items, out_proj->rows.chunk, run(out_proj->rows));
  });
  return MixerStepOutputs{out_proj->pieces[0], projection->out.residual_out};
}

}  // namespace mamba::ops::cpu

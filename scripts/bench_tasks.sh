#!/usr/bin/env bash
# The paper's synthetic tasks as MAMBA.md defines them (a benchmark, not run in CI):
#   Selective Copying (body 256, 16 data tokens, vocab 16; 2 layers, d_model 64), with selection and
#   with --no-selection (the LTI ablation), and Induction Heads (trained at length 256, evaluated at
#   256, 512, … up to MAX_LEN). Writes the results between the bench markers of docs/training.md.
# Settings come from the environment: BIN, SC_STEPS, IH_STEPS, IH_THREADS, BATCH, LR, THREADS, MAX_LEN,
# EVAL_SEQS, WORK,
# and RUNS (default "sc_selective sc_lti ih"): the runs to train; the others keep their earlier
# results in WORK.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/mambacpp}
SC_STEPS=${SC_STEPS:-12000}  # Selective Copying passes 97% after ~8k steps at these settings
IH_STEPS=${IH_STEPS:-5000}   # Induction Heads jumps to 100% after ~2.5k steps at one thread
IH_THREADS=${IH_THREADS:-1}
BATCH=${BATCH:-16}
LR=${LR:-2e-3}
THREADS=${THREADS:-2}
MAX_LEN=${MAX_LEN:-16384}
EVAL_SEQS=${EVAL_SEQS:-256}  # sequences per length-generalisation point (the training eval uses all 1024)
WORK=${WORK:-bench_tasks_out}
RUNS=${RUNS-sc_selective sc_lti ih}  # empty: train nothing, only evaluate and tabulate
DOC=docs/training.md

[[ -x "$BIN" ]] || { echo "bench_tasks.sh: $BIN not found; build first (ninja -C build mambacpp)" >&2; exit 1; }
mkdir -p "$WORK"
common=(--n-layer 2 --d-model 64 --batch "$BATCH" --lr "$LR" --warmup 500 --weight-decay 0.1 --grad-clip 1
        --eval-every 1000 --seed 1)

json_field() {  # json_field FIELD < one JSON object
  sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p"
}
fmt() {  # four decimals, or n/a when the field was missing
  local v
  v=$(cat)
  if [[ -n $v ]]; then printf '%.4f' "$v"; else printf 'n/a'; fi
}
last_eval() {  # the last evaluation record of a run (nothing when it failed)
  if [[ -f $1/metrics.jsonl ]]; then grep '"eval":true' "$1/metrics.jsonl" | tail -1; fi
}

train() {  # train NAME ARGS... when NAME is in RUNS (a failure's reason is in WORK/NAME.log)
  local name=$1
  shift
  [[ " $RUNS " == *" $name "* ]] || return 0
  rm -rf "${WORK:?}/$name"
  "$BIN" train "$@" "${common[@]}" --out "$WORK/$name" 2> "$WORK/$name.log" ||
    echo "bench_tasks.sh: $name failed: $(tail -1 "$WORK/$name.log")" >&2
}

sc_args=(--task selective-copying --task-len 256 --task-tokens 16 --task-vocab 16)
# Selective Copying decays the rate (cosine to 2e-4). Induction Heads keeps it constant: its loss
# sits at chance until a sudden drop, and when that comes is fragile. With seed 1 at one thread it
# comes near step 2,500; at two threads (other float summation order) it had not come after 12,000
# steps, nor with a cosine-decayed rate over 4,000; so that run uses IH_THREADS (default 1).
sc_args+=(--schedule cosine --min-lr 2e-4 --steps "$SC_STEPS" --threads "$THREADS")
train sc_selective "${sc_args[@]}"
train sc_lti "${sc_args[@]}" --no-selection
train ih --task induction-heads --task-len 256 --task-vocab 16 --schedule constant --steps "$IH_STEPS" \
  --threads "$IH_THREADS"

acc() { last_eval "$WORK/$1" | json_field accuracy | fmt; }
seconds() {  # training time of a run: elapsed_s of its last step
  local v=""
  [[ -f $WORK/$1/metrics.jsonl ]] && v=$(grep -v '"eval"' "$WORK/$1/metrics.jsonl" | tail -1 | json_field elapsed_s)
  if [[ -n $v ]]; then printf '%.0f' "$v"; else printf 'n/a'; fi
}
loss() { last_eval "$WORK/$1" | json_field loss | fmt; }
# "step N, M s": the first evaluation at or above 97% accuracy and the training time to it.
first_97() {
  local metrics=$WORK/$1/metrics.jsonl step
  [[ -f $metrics ]] || { echo "n/a"; return; }
  step=$(grep '"eval":true' "$metrics" | awk -F'"step":' '{split($2, a, /[,}]/); print a[1], $0}' |
    while read -r s rest; do
      a=$(echo "$rest" | json_field accuracy)
      if awk -v a="$a" 'BEGIN { exit !(a >= 0.97) }'; then echo "$s"; break; fi
    done)
  [[ -n $step ]] || { echo "never"; return; }
  printf 'step %s, %.0f s' "$step" "$(grep "\"step\":$step," "$metrics" | grep -v '"eval"' | json_field elapsed_s)"
}

ih_rows=""
len=256
while ((len <= MAX_LEN)); do
  batch=$((len >= 4096 ? 1 : 8))
  out=$("$BIN" eval -m "$WORK/ih" --task induction-heads --task-len "$len" --task-vocab 16 --batch "$batch" \
        --max-batches $((EVAL_SEQS / batch)) --threads "$THREADS" --json) || out=""
  ih_rows+="| $len | $(echo "$out" | json_field accuracy | fmt) | $(echo "$out" | json_field loss | fmt) |"$'\n'
  len=$((len * 2))
done

report=$(cat <<EOF
Measured $(date -u +%Y-%m-%d) on $(uname -m), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown);
batch $BATCH, AdamW lr $LR after 500 warmup steps, weight decay 0.1, clip 1, 2 layers, d_model 64, seed 1;
Selective Copying: $THREADS threads, cosine to 2e-4 over $SC_STEPS steps; Induction Heads: $IH_THREADS thread(s),
constant rate, $IH_STEPS steps (at two threads the same run stayed at chance for 12,000 steps: see the script).
Training time is wall time on the shared build machine (other work ran beside it at times).
Accuracy on the fixed 1024-sequence evaluation set at the end of training; "≥ 97%" is the first
evaluation (every 1000 steps) at or above 97% and the training time to it.

| task | model | accuracy | eval loss | ≥ 97% at | training time (s) |
|---|---|---|---|---|---|
| Selective Copying (L 256, M 16, V 16) | Mamba (selective) | $(acc sc_selective) | $(loss sc_selective) | $(first_97 sc_selective) | $(seconds sc_selective) |
| Selective Copying (L 256, M 16, V 16) | LTI, \`--no-selection\` | $(acc sc_lti) | $(loss sc_lti) | $(first_97 sc_lti) | $(seconds sc_lti) |
| Induction Heads (L 256, V 16) | Mamba (selective) | $(acc ih) | $(loss ih) | $(first_97 ih) | $(seconds ih) |

Induction Heads length generalisation (trained at 256; $EVAL_SEQS sequences per length):

| length | accuracy | loss |
|---|---|---|
$ih_rows
EOF
)

echo "$report" | bash scripts/replace_doc_section.sh bench_tasks "$DOC"
echo "$report"

#!/usr/bin/env bash
# CPU inference benchmarks against TARGETS.md (a benchmark, not run in CI). Parts, chosen with
# PARTS (default "table context"; add "long" for the 1,000,000-token prompt, ~20 min on 2 cores):
#   table    random 130m/370m shapes, f32 and bf16 weights, prompt 512, 128 decode steps, medians of
#            REPS, each beside the decode floor measured in the same run (bench's weight-read pass)
#   context  decode speed and peak memory after prompts of CONTEXTS tokens (plot: docs/perf/cpu_context.svg)
#   long     one LONG-token prompt through the 130m shape: prefill time and peak memory
# Results replace the bench_cpu_* sections of docs/perf/cpu_model.md. Settings: BIN, THREADS, REPS,
# CONTEXTS, LONG, PARTS.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/mambacpp}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
CONTEXTS=${CONTEXTS:-1000 10000 100000}
LONG=${LONG:-1000000}
PARTS=${PARTS:-table context}
DOC=docs/perf/cpu_model.md
PLOT=docs/perf/cpu_context.svg

[[ -x "$BIN" ]] || { echo "bench_cpu.sh: $BIN not found; build first (ninja -C build mambacpp)" >&2; exit 1; }

field() {  # field JSON NAME: a number from bench's one-line JSON
  sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" <<< "$1"
}
bench() {  # bench ARGS...: bench's JSON line
  "$BIN" bench "$@" --threads "$THREADS" --json 2> /dev/null | tail -n 1
}
stamp() {
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $THREADS threads, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (\`scripts/bench_cpu.sh\`)."
}

if [[ " $PARTS " == *" table "* ]]; then
  rows=""
  # shape, dtype flag, llama.cpp pp512 and tg128 (TARGETS.md), our targets
  while read -r shape dtype llama_pp llama_tg target_pp target_tg; do
    j=$(bench --shape "$shape" --dtype "$dtype" -p 512 -g 128 --reps "$REPS")
    rows+=$(printf '| %s, %s | %.0f | %s | %s | %.1f | %s | %s | %.1f (%.1f GB/s) | %.0f%% |' "$shape" "$dtype" \
      "$(field "$j" prefill_tok_s)" "$llama_pp" "$target_pp" "$(field "$j" decode_tok_s)" "$llama_tg" "$target_tg" \
      "$(field "$j" decode_floor_tok_s)" "$(field "$j" weights_read_gb_s)" \
      "$(awk -v f="$(field "$j" decode_fraction_of_floor)" 'BEGIN { print 100 * f }')")$'\n'
  done <<'END'
130m f32 348 60 ≥700 ≥110
370m f32 121 18.8 ≥240 ≥35
130m bf16 395(f16) 73.7(f16) ≥800 ≥200
END
  report=$(cat <<END
$(stamp) Medians of $REPS repetitions; prompt 512 tokens with only the last position's logits, then 128
greedy steps. "Floor" = the weights read once by all threads, timed right after each repetition's
decode (\`bench\` does this on the CPU); TARGETS.md's floor assumed 76 GB/s.

| model, weights | pp512 tok/s | llama.cpp | target | tg128 tok/s | llama.cpp | target | floor tok/s (read rate) | tg / floor |
|---|---|---|---|---|---|---|---|---|
${rows%$'\n'}
END
  )
  echo "$report" | bash scripts/replace_doc_section.sh bench_cpu_table "$DOC"
  echo "$report"
fi

if [[ " $PARTS " == *" context "* ]]; then
  rows="" points=""
  for c in $CONTEXTS; do
    j=$(bench --shape 130m -p "$c" -g 64 --reps 1)
    ms=$(awk -v t="$(field "$j" decode_tok_s)" 'BEGIN { printf "%.2f", 1000 / t }')
    rows+=$(printf '| %s | %.0f | %.1f | %s | %.0f%% | %.2f | %.0f |' "$c" "$(field "$j" prefill_tok_s)" \
      "$(field "$j" decode_tok_s)" "$ms" "$(awk -v f="$(field "$j" decode_fraction_of_floor)" 'BEGIN { print 100 * f }')" \
      "$(field "$j" state_mib)" "$(field "$j" peak_rss_mib)")$'\n'
    points+="$c $ms $(field "$j" peak_rss_mib)"$'\n'
  done
  # Decode time per token and peak memory against context length (log scale), as an SVG.
  awk -v title="mamba-130m on CPU: decode time and memory do not grow with context" -v memory="peak memory MiB" \
    -f scripts/plot_context.awk <<< "$points" > "$PLOT.tmp" && mv "$PLOT.tmp" "$PLOT"
  report=$(cat <<END
$(stamp) 130m shape, f32, prompt of N tokens prefilled in chunks of 2048, then 64 greedy steps
(one repetition each). Plot: [cpu_context.svg](cpu_context.svg).

| context N | prefill tok/s | decode tok/s | decode ms/token | decode / floor | state MiB per sequence | peak RSS MiB |
|---|---|---|---|---|---|---|
${rows%$'\n'}
END
  )
  echo "$report" | bash scripts/replace_doc_section.sh bench_cpu_context "$DOC"
  echo "$report"
fi

if [[ " $PARTS " == *" long "* ]]; then
  j=$(bench --shape 130m -p "$LONG" -g 16 --reps 1)
  report=$(cat <<END
$(stamp) One prompt of $LONG random tokens through the 130m shape (f32), prefilled in chunks of
2048 with only the last position's logits, then 16 decode steps: prefill $(awk -v t="$(field "$j" prefill_tok_s)" -v n="$LONG" 'BEGIN { printf "%.0f s (%.0f tok/s)", n / t, t }'),
decode $(printf '%.1f' "$(field "$j" decode_tok_s)") tok/s afterwards, state $(printf '%.2f' "$(field "$j" state_mib)") MiB per sequence, peak
RSS $(printf '%.0f' "$(field "$j" peak_rss_mib)") MiB.
END
  )
  echo "$report" | bash scripts/replace_doc_section.sh bench_cpu_long "$DOC"
  echo "$report"
fi

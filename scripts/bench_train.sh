#!/usr/bin/env bash
# Training throughput on the CPU (a benchmark, not run in CI): the tiny byte model of the README's
# first command and the mamba-130m shape (GPT-NeoX vocabulary, text through the tokenizer), AdamW,
# median tokens/s over steps 6…STEPS. Writes the table between the bench_train markers of
# docs/training.md. Settings from the environment: BIN, THREADS, STEPS, TOKENIZER, WORK.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/mambacpp}
THREADS=${THREADS:-2}
STEPS=${STEPS:-25}
TOKENIZER=${TOKENIZER:-../shared/fixtures/gpt-neox-20b-tokenizer.json}
WORK=${WORK:-bench_train_out}
DOC=docs/training.md

[[ -x "$BIN" ]] || { echo "bench_train.sh: $BIN not found; build first (ninja -C build mambacpp)" >&2; exit 1; }
mkdir -p "$WORK"
bash scripts/fortunes_corpus.sh "$WORK/corpus.txt"

median_rate() {  # median tokens_per_s of the step records from step 6 on
  grep -v '"eval"' "$1/metrics.jsonl" | sed -n 's/.*"tokens_per_s":\([0-9.eE+-]*\).*/\1/p' | tail -n +6 | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) printf "%.0f", v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

run() {  # run NAME BATCH SEQ_LEN ARGS...
  local name=$1 batch=$2 len=$3
  shift 3
  rm -rf "${WORK:?}/$name"
  "$BIN" train "$@" --batch "$batch" --seq-len "$len" --steps "$STEPS" --schedule constant --lr 1e-3 \
    --threads "$THREADS" --device cpu --eval-batches 1 --out "$WORK/$name" 2> "$WORK/$name.log"
  echo "| $name | $batch × $len | $(median_rate "$WORK/$name") |"
}

rows=$(
  run tiny 16 256 --preset tiny --data "$WORK/corpus.txt"
  run 130m 1 512 --preset 130m --data "$WORK/corpus.txt" --data-format text --tokenizer "$TOKENIZER"
)
report=$(cat <<END
Measured $(date -u +%Y-%m-%d) on $(uname -m), $(nproc) cores, $THREADS threads, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown);
AdamW, float32, median tokens/s of steps 6–$STEPS (\`scripts/bench_train.sh\`).

| shape | batch × length | tokens/s |
|---|---|---|
$rows
END
)
echo "$report" | bash scripts/replace_doc_section.sh bench_train "$DOC"
echo "$report"

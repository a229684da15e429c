#!/usr/bin/env bash
# The main job: install, build, then train a small byte-level Mamba (MambaByte-style) on the
# fortune cookie texts of Debian's `fortunes` package for at most 10 minutes, print its
# validation bits per byte, and write with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMAMBACPP_TESTS=OFF -DMAMBACPP_BENCH=OFF
cmake --build build -j "$(nproc)" --target mambacpp

out=out/fortunes
mkdir -p "$out"
bash scripts/fortunes_corpus.sh "$out/corpus.txt"
bytes=$(wc -c < "$out/corpus.txt")
# The trainer holds out the last 5% for validation; the same bytes are evaluated again below.
tail -c $((bytes / 20)) "$out/corpus.txt" > "$out/validation.txt"
echo "corpus: $bytes bytes of fortunes"

./build/mambacpp train --preset tiny --data "$out/corpus.txt" --data-format bytes --out "$out/model" \
  --batch 16 --seq-len 256 --lr 3e-3 --min-lr 3e-4 --schedule cosine --warmup 100 --steps 3000 \
  --eval-every 250 --eval-batches 8 --val-fraction 0.05 --save-every 500 --time-limit 540 --seed 1
./build/mambacpp eval -m "$out/model" --data "$out/validation.txt" --data-format bytes
./build/mambacpp generate -m "$out/model" --tokenizer bytes --prompt "Q: What is the meaning of life?
A:" -n 400 --temperature 0.8 --top-p 0.95 --seed 7

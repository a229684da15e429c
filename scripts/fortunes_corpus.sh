#!/usr/bin/env bash
# Writes the training text of the main job to $1: the fortune cookie texts of Debian's `fortunes`
# package, not their .dat indexes (nor the .u8 links to the same texts), in a fixed order.
set -euo pipefail
dir=/usr/share/games/fortunes
[[ -d $dir ]] || { echo "fortunes_corpus.sh: $dir missing (apt-get install fortunes)" >&2; exit 1; }
find "$dir" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -print0 | sort -z | xargs -0 cat > "$1"

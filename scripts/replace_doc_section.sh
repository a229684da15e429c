#!/usr/bin/env bash
# replace_doc_section.sh NAME FILE: replaces what lies between the lines <!-- NAME:begin --> and
# <!-- NAME:end --> of FILE with standard input (the benchmark scripts keep their results in docs/).
set -euo pipefail
name=$1 file=$2
grep -q "<!-- $name:begin -->" "$file" || { echo "replace_doc_section.sh: no '$name' section in $file" >&2; exit 1; }
REPORT=$(cat) BEGIN="<!-- $name:begin -->" END="<!-- $name:end -->" awk '
  $0 == ENVIRON["BEGIN"] { print; print ENVIRON["REPORT"]; skip = 1; next }
  $0 == ENVIRON["END"] { skip = 0 }
  !skip { print }
' "$file" > "$file.tmp" && mv "$file.tmp" "$file"
